"""Every policy name upo accepts, resolved in one place. `upo eval --policies`, `policy train`'s
and `policy pretrain`'s reference, `upo.load_policy`, lm-eval's `policy=` and the plots all come
here, and the help texts and docs/policies.md are made from the same declarations.

A name is, in this order:
- a rule or search as its class spells it (`confidence`, `threshold:0.9`, `lookahead:3`): the
  declarations of base.Policy, on the classes of rules.HAND_RULES and SEARCHES below;
- a policy checkpoint directory (greedy), or a shipped policy by name (`sudoku9-policy`; a local
  directory of that name wins);
- DIR@T: that checkpoint's policy sampled at temperature T (e.g. for `upo eval --pass-at N`).
A spelled name wins over a directory of the same name: write ./NAME for the directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..assets import find as find_shipped
from ..assets import names as shipped_names
from ..errors import UpoError
from ..models.denoiser import Denoiser
from .base import Policy, build_named, spelled_class
from .learned import LearnedPolicy, is_policy_checkpoint, load_policy
from .lookahead import TrialDecode
from .rules import HAND_RULES

SEARCHES: tuple[type[Policy], ...] = (TrialDecode,)  # rules that run the MDM to choose
NAMED: tuple[type[Policy], ...] = HAND_RULES + SEARCHES
NO_REFERENCE = "none"  # policy train without a regulariser


def policy_names() -> list[str]:
    """The spellings of every named policy, as the help texts and docs list them."""
    return [cls.spelling for cls in NAMED]


def reference_names() -> list[str]:
    """What `policy train --reference` (UPOConfig.reference) accepts: every spelled policy (the
    regulariser follows from its class) or none. A checkpoint is no reference: its
    regulariser would need the policy network at every cached state."""
    return policy_names() + [NO_REFERENCE]


def policy_class(name: str) -> type[Policy] | None:
    """The class a spelled name belongs to (None for a checkpoint path or an unknown name)."""
    return spelled_class(name, NAMED)


def make_policy(name: str, mdm: Denoiser | None = None) -> Policy:
    """A spelled policy; ValueError naming the bad input. `mdm` is needed by searches only."""
    return build_named(name, NAMED, mdm)


def resolve_policy(name: str, mdm: Denoiser) -> Policy:
    """Any policy name (see the module docstring) as a Policy; one-line UpoError otherwise."""
    local = find_shipped(name, "checkpoints")
    if policy_class(name) is None and Path(local).exists():
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
        return make_policy(name, mdm)
    except ValueError as err:
        if policy_class(name) is None and ("/" in name or name.startswith(".")):
            raise UpoError(f"{name}: policy checkpoint directory not found") from None
        raise UpoError(
            f"{err}; valid: {', '.join(policy_names())}, a policy checkpoint directory or a "
            "shipped policy by name"
        ) from None


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


# -- help texts and docs, made from the declarations -------------------------------------------


def policies_help() -> str:
    """`upo eval --policies`' help: every spelling, and the shipped policies of this install."""
    shipped = [n for n in shipped_names("checkpoints") if not n.endswith("-mdm")]
    return (
        f"comma-separated: {', '.join(policy_names())}, a policy checkpoint directory or a "
        f"shipped policy by name ({', '.join(shipped) or 'none'}; a local directory of that "
        "name wins), or DIR@T to sample it at temperature T (docs/policies.md)"
    )


def reference_help() -> str:
    """`policy train --reference`'s help."""
    return " | ".join(reference_names()) + " (docs/policies.md)"


def policies_markdown() -> str:
    """docs/policies.md: the table of every spelled policy (tests/test_policy_registry.py checks
    that the file is this text; `python -m upo.policies.registry > docs/policies.md` writes it)."""
    rows = [
        "# Policy names",
        "",
        "Generated from `upo.policies.registry` (`python -m upo.policies.registry > "
        "docs/policies.md`); do not edit by hand.",
        "",
        "Every command and API that takes a policy takes these names: `upo eval --policies`, "
        "`upo.load_policy`, lm-eval's `policy=`, `policy pretrain`'s `reference` and `decode_with`"
        ". `policy train --reference` takes the same spellings or `none`. A parameter left out "
        "takes the default.",
        "",
        "| name | default | per step | as UPO's reference | what it chooses |",
        "|---|---|---|---|---|",
    ]
    for cls in NAMED:
        default = "" if cls.default is None else f"{cls.default:g}"
        per_step = "several (ignores k)" if cls.parallel else "k positions"
        reference = _as_reference(cls)
        rows.append(f"| `{cls.spelling}` | {default} | {per_step} | {reference} | {cls.summary} |")
    rows += [
        "",
        "Also accepted:",
        "",
        "- a policy checkpoint directory (greedy: the highest score), or a shipped policy by name "
        "(a local directory of that name wins); a spelled name wins over a directory of the same "
        "name, write `./NAME` for the directory;",
        "- `DIR@T`: that checkpoint's policy sampled at temperature T;",
        "- older spellings, kept for existing configs: "
        + ", ".join(
            f"`{alias}:{cls.spelling.partition(':')[2]}` for `{cls.spelling}`"
            for cls in NAMED
            for alias in cls.aliases
        )
        + ".",
        "",
    ]
    return "\n".join(rows)


def _as_reference(cls: type[Policy]) -> str:
    how = {"ce": "cross-entropy to its choice", "kl": "KL to its distribution"}[cls.regulariser]
    if cls.parallel:  # a one-position policy: to the most confident position of the set
        how = "cross-entropy to the set it fills"
    if cls.reference_topk is not Policy.reference_topk:  # the class restricts the candidates
        how += "; the policy chooses among the same K candidates"
    return how


if __name__ == "__main__":
    sys.stdout.write(policies_markdown())
