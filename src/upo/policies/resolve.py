"""Turn a policy name from the command line into a Policy: a hand rule or a checkpoint path."""

from __future__ import annotations

from pathlib import Path

from ..assets import find as find_shipped
from ..errors import UpoError
from ..models.denoiser import Denoiser
from .base import Policy
from .learned import LearnedPolicy, is_policy_checkpoint, load_policy
from .lookahead import parse_lookahead
from .rules import RULE_NAMES, make_rule


def resolve_policy(name: str, mdm: Denoiser) -> Policy:
    """A rule name, a policy checkpoint directory (greedy: the highest score), DIR@T: the
    checkpoint's policy sampled at temperature T, e.g. for `upo eval --pass-at N`, or the
    trial-decode search `lookahead:K[:GATE[:DEPTH]]` (it needs the MDM, so it is not a plain
    rule). A rule name wins over a directory of the same name; write ./NAME for the directory.
    A shipped policy is named without a path (`sudoku9-policy`); a local directory of that name
    wins over it."""
    local = find_shipped(name, "checkpoints")
    if not _is_rule_name(name) and Path(local).exists():
        return load_learned(local, mdm, None)
    path, at, temperature = name.rpartition("@")
    path = find_shipped(path, "checkpoints")
    if at and path and Path(path).exists():
        try:
            t = float(temperature)
        except ValueError:
            t = float("nan")
        if not 0.0 < t < float("inf"):
            raise UpoError(f"{name}: the sampling temperature after @ must be a positive number")
        return load_learned(path, mdm, t)
    try:
        if name.split(":")[0] == "lookahead":
            return parse_lookahead(name, mdm)
        return make_rule(name)
    except ValueError as err:
        looks_like_path = "/" in name or name.startswith(".")
        if looks_like_path:
            raise UpoError(f"{name}: policy checkpoint directory not found") from None
        raise UpoError(
            f"{err}; valid: {', '.join(RULE_NAMES)}, lookahead:K[:GATE[:DEPTH]], a policy "
            "checkpoint directory or a shipped policy by name"
        ) from None


def _is_rule_name(name: str) -> bool:
    """Spelled like a rule (its parameter may still be bad): `confidence`, `softmax:0.1`, ..."""
    head = name.split(":")[0]
    # RULE_NAMES, plus the search and make_rule's alias topk for topk-random
    return head in {"lookahead", "topk"} | {r.split(":")[0] for r in RULE_NAMES}


def load_learned(path: str, mdm, temperature: float | None) -> LearnedPolicy:
    """The policy of checkpoint `path`: greedy when temperature is None, else sampled at it."""
    if not is_policy_checkpoint(path):
        raise UpoError(f"{path}: not a policy checkpoint (no config.json with kind 'policy')")
    net = load_policy(path, mdm)
    if temperature is None:
        return LearnedPolicy(net, mdm.mask_id, greedy=True, name=Path(path).name)
    return LearnedPolicy(
        net, mdm.mask_id, temperature, greedy=False, name=f"{Path(path).name}@{temperature:g}"
    )
