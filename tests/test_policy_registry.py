"""The policy registry: every name is spelled, parsed, listed and documented from the policy
classes' own declarations (upo.policies.registry)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from upo.cli import build_parser
from upo.errors import UpoError
from upo.plots import policy_family
from upo.policies.base import Policy, build_named
from upo.policies.registry import (
    NAMED,
    make_policy,
    policies_help,
    policies_markdown,
    policy_class,
    policy_names,
    reference_help,
    reference_names,
    resolve_policy,
)
from upo.policies.rules import HAND_RULES, RULE_NAMES, make_rule
from upo.rl.references import make_reference

ROOT = Path(__file__).resolve().parents[1]


def test_docs_policies_md_is_the_generated_table():
    """docs/policies.md lists exactly the registered names: regenerate it with
    `python -m upo.policies.registry > docs/policies.md` after adding a rule."""
    assert (ROOT / "docs" / "policies.md").read_text() == policies_markdown()
    listed = re.findall(r"^\| `([^`]+)` \|", policies_markdown(), re.M)
    assert listed == policy_names()


def test_every_named_class_declares_a_spelling_and_a_summary():
    heads = [cls.head() for cls in NAMED]
    assert len(set(heads)) == len(heads)  # one class per head
    for cls in NAMED:
        assert cls.spelling and cls.summary and cls.regulariser in ("ce", "kl")
        # a parameter-taking rule has a default unless its spelling needs one (the search)
        if cls.takes_parameter() and not cls.needs_mdm:
            assert cls.default is not None


@pytest.mark.parametrize("cls", HAND_RULES, ids=lambda c: c.head())
def test_a_rule_by_its_bare_head_is_its_default(cls):
    policy = make_rule(cls.head())
    assert isinstance(policy, cls)
    expected = cls.spelling if not cls.takes_parameter() else f"{cls.head()}:{cls.default:g}"
    assert policy.name == expected
    assert policy_class(policy.name) is cls  # the name a rule gives itself spells it again


def test_help_texts_come_from_the_registry():
    for name in policy_names():
        assert name in policies_help()
        assert name in reference_help()
    assert reference_names()[-1] == "none"
    train = build_parser()._subparsers._group_actions[0].choices["policy"]
    train = train._subparsers._group_actions[0].choices["train"]
    (action,) = [a for a in train._actions if "--reference" in a.option_strings]
    assert action.help == reference_help()


def test_old_topk_spelling_is_an_alias():
    assert make_rule("topk:3").name == "topk-random:3"
    ref = make_reference("topk:3")
    assert ref.name == "topk:3" and ref.regulariser == "kl" and ref.restrict_topk == 3
    assert make_reference("topk-random:4").restrict_topk == 4
    assert make_reference("topk").restrict_topk == 5


@pytest.mark.parametrize(
    "name, regulariser",
    [
        ("confidence", "ce"),
        ("left-to-right", "ce"),
        ("threshold:0.8", "ce"),
        ("eb:0.1", "ce"),
        ("softmax:0.1", "kl"),
        ("softmax-vocab:0.05", "kl"),
        ("random", "kl"),
    ],
)
def test_every_rule_is_a_reference_with_its_declared_regulariser(name, regulariser):
    ref = make_reference(name)
    assert ref.regulariser == regulariser and ref.restrict_topk is None
    assert ref.policy.name == make_rule(name).name


def test_bad_and_unknown_references_are_one_line_errors():
    with pytest.raises(UpoError, match="unknown reference 'best'; valid: random, confidence"):
        make_reference("best")
    with pytest.raises(UpoError, match="bad reference 'softmax:x'"):
        make_reference("softmax:x")
    with pytest.raises(UpoError, match="runs the MDM itself"):
        make_reference("lookahead:2")


def test_a_search_needs_the_mdm(mdm4):
    with pytest.raises(ValueError, match="runs the MDM itself"):
        make_policy("lookahead:2")
    assert make_policy("lookahead:2", mdm4).name == "lookahead:2"
    assert make_reference("lookahead:2:0.9", mdm4).regulariser == "ce"


def test_plot_families_follow_the_declarations(mdm4):
    assert policy_family(make_rule("confidence")) == "hand rule, one cell per step"
    assert policy_family(make_rule("eb:0.2")) == "several cells per step"
    assert policy_family(resolve_policy("lookahead:2", mdm4)) == "search (lookahead)"


def test_a_new_rule_is_one_class():
    """A rule declared on its class parses, lists and documents itself once it is in the
    classes the registry reads (HAND_RULES, in rules.py)."""

    class EveryOther(Policy):
        spelling, default, regulariser = "every-other:N", 2, "ce"
        summary = "a test rule"

        def __init__(self, n):
            self.n, self.name = n, f"every-other:{n}"

    rules = (*HAND_RULES, EveryOther)
    assert build_named("every-other:3", rules).n == 3
    assert build_named("every-other", rules).n == 2
    with pytest.raises(ValueError, match="bad policy 'every-other:x'"):
        build_named("every-other:x", rules)
    assert [cls.spelling for cls in HAND_RULES] == RULE_NAMES
