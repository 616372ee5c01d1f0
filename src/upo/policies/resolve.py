"""Turn a policy name from the command line into a Policy: a hand rule or a checkpoint path."""

from __future__ import annotations

from pathlib import Path

from ..errors import UpoError
from .base import Policy
from .learned import LearnedPolicy, is_policy_checkpoint, load_policy
from .rules import RULE_NAMES, make_rule


def resolve_policy(name: str, mdm) -> Policy:
    if Path(name).exists():
        if not is_policy_checkpoint(name):
            raise UpoError(f"{name}: not a policy checkpoint (no config.json with kind 'policy')")
        net = load_policy(name, mdm)
        return LearnedPolicy(net, mdm.mask_id, greedy=True, name=Path(name).name)
    try:
        return make_rule(name)
    except ValueError as err:
        looks_like_path = "/" in name or name.startswith(".")
        if looks_like_path:
            raise UpoError(f"{name}: policy checkpoint directory not found") from None
        raise UpoError(
            f"{err}; valid: {', '.join(RULE_NAMES)} or a policy checkpoint directory"
        ) from None
