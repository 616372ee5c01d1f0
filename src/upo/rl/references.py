"""Reference policies for UPO and how each one regularises the learned policy."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UpoError
from ..policies.base import Policy
from ..policies.rules import make_rule

REFERENCE_NAMES = [
    "confidence",
    "margin",
    "entropy",
    "softmax:TAU",
    "softmax-vocab:TAU",
    "topk:K",
    "threshold:P",
    "eb:GAMMA",
    "none",
]


@dataclass
class Reference:
    """A reference rule, the regulariser that keeps the policy near it, and the candidate
    restriction it implies (Top-K references only let the policy choose among the K most
    confident positions)."""

    name: str
    policy: Policy | None
    regulariser: str  # "ce" (deterministic rules), "kl" (stochastic rules) or "none"
    restrict_topk: int | None


def make_reference(name: str) -> Reference:
    try:
        return _make_reference(name)
    except ValueError as err:  # a bad parameter, e.g. softmax:x or topk:0
        raise UpoError(f"bad reference {name!r}: {err}") from None


def _make_reference(name: str) -> Reference:
    base, _, arg = name.partition(":")
    if name == "none":
        return Reference("none", None, "none", None)
    if base in ("confidence", "margin", "entropy") and not arg:
        # One-hot references: KL to them is infinite off their choice, so use cross-entropy.
        return Reference(name, make_rule(name), "ce", None)
    if base in ("threshold", "eb"):
        # Parallel rules: deterministic sets, so cross-entropy to the set they fill (for a
        # one-position policy, to their most confident position).
        return Reference(name, make_rule(name), "ce", None)
    if base in ("softmax", "softmax-vocab"):
        # Stochastic rules with full support on the candidates: KL is finite, use it.
        return Reference(name, make_rule(name), "kl", None)
    if base in ("topk", "topk-random"):
        try:
            k = int(arg) if arg else 5
        except ValueError:
            raise UpoError(f"bad reference {name!r}: K must be a whole number") from None
        return Reference(f"topk:{k}", make_rule(f"topk-random:{k}"), "kl", k)
    raise UpoError(f"unknown reference {name!r}; valid: {', '.join(REFERENCE_NAMES)}")
