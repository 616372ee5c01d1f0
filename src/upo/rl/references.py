"""Reference policies for UPO and how each one regularises the learned policy. Which names are
references, and how each regularises, is declared by the policy classes (policies/registry.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UpoError
from ..models.denoiser import Denoiser
from ..policies.base import Policy
from ..policies.registry import NO_REFERENCE, policy_class, reference_names


@dataclass
class Reference:
    """A reference rule, the regulariser that keeps the policy near it, and the candidate
    restriction it implies (Top-K references only let the policy choose among the K most
    confident positions)."""

    name: str
    policy: Policy | None
    regulariser: str  # "ce" (deterministic rules), "kl" (stochastic rules) or "none"
    restrict_topk: int | None


def make_reference(name: str, mdm: Denoiser | None = None) -> Reference:
    """The reference `name` (a spelled policy or none); `mdm` is needed by a search reference."""
    if name == NO_REFERENCE:
        return Reference(NO_REFERENCE, None, "none", None)
    cls = policy_class(name)
    if cls is None:
        raise UpoError(f"unknown reference {name!r}; valid: {', '.join(reference_names())}")
    if cls.needs_mdm and mdm is None:
        raise UpoError(f"reference {name!r} runs the MDM itself: make it with the MDM")
    try:
        policy = cls.from_parameter(name.partition(":")[2], mdm)
    except ValueError as err:  # a bad parameter, e.g. softmax:x or topk:0
        raise UpoError(f"bad reference {name!r}: {err}") from None
    return Reference(name, policy, policy.regulariser, policy.reference_topk)
