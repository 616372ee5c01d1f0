"""Behaviour of the policy primitives and the hand rules."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from upo.errors import UpoError
from upo.policies.base import (
    StepState,
    masked_log_softmax,
    sample_without_replacement,
    top_by_score,
)
from upo.policies.resolve import resolve_policy
from upo.policies.rules import RULE_NAMES, make_rule

ALL_RULES = [
    "random",
    "confidence",
    "margin",
    "entropy",
    "left-to-right",
    "topk-random:1",
    "topk-random:3",
    "topk-random:50",
    "softmax:0.5",
    "softmax:0.01",
    "threshold:0.9",
]
DETERMINISTIC = ["confidence", "margin", "entropy", "left-to-right", "threshold:0.9"]

BIG = float(torch.tensor(1e30).item())  # 1e30 as a float32
SETTINGS = settings(max_examples=40, deadline=None)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_state(b=4, l=10, v=6, seed=0, sharp=3.0, all_candidates=False) -> StepState:
    """A synthetic step: random logits (mask token 0 at -inf) and a random candidate set with at
    least one candidate per row."""
    gen = seeded(seed)
    logits = sharp * torch.randn(b, l, v, generator=gen)
    logits[..., 0] = float("-inf")
    masked = torch.rand(b, l, generator=gen) < 0.6
    masked[:, 0] |= ~masked.any(1)
    if all_candidates:
        masked[:] = True
    tokens = torch.randint(1, v, (b, l), generator=gen).masked_fill(masked, 0)
    features = torch.randn(b, l, 8, generator=gen)
    block = torch.ones(b, l, dtype=torch.bool)
    return StepState(tokens, logits, features, masked, masked.clone(), block, 0)


# --- masked_log_softmax ----------------------------------------------------------------------


def test_masked_log_softmax_huge_scores():
    scores = torch.tensor([[1e30, -1e30, 1e30, 0.0], [-1e30, -1e30, -1e30, 5.0]])
    allowed = torch.tensor([[True, True, True, False], [True, True, True, False]])
    out = masked_log_softmax(scores, allowed)
    assert not torch.isnan(out).any()
    torch.testing.assert_close(out[0, [0, 2]], torch.full((2,), math.log(0.5)))
    assert out[0, 1] < -1e29  # log-prob of a 2e30 deficit: tiny but exact, not NaN
    # three equal huge negative scores: uniform, not NaN and not all -inf
    torch.testing.assert_close(out[1, :3], torch.full((3,), -math.log(3)))
    assert (out[:, 3] == float("-inf")).all()


def test_masked_log_softmax_ignores_disallowed_scores():
    allowed = torch.tensor([[True, False, True, False]])
    a = masked_log_softmax(torch.tensor([[1.0, 1e30, 2.0, float("nan")]]), allowed)
    b = masked_log_softmax(torch.tensor([[1.0, -5.0, 2.0, 0.0]]), allowed)
    assert torch.equal(a, b)


def test_masked_log_softmax_matches_log_softmax():
    scores = torch.randn(3, 7, generator=seeded())
    allowed = torch.ones(3, 7, dtype=torch.bool)
    torch.testing.assert_close(masked_log_softmax(scores, allowed), torch.log_softmax(scores, -1))


def test_masked_log_softmax_nothing_allowed():
    out = masked_log_softmax(
        torch.tensor([[1.0, 2.0], [1e30, -1e30]]), torch.zeros(2, 2, dtype=bool)
    )
    assert not torch.isnan(out).any()
    assert (out == float("-inf")).all()


def test_masked_log_softmax_keeps_a_finite_dominant_score_finite():
    """exp(1e30 - (-1e30)) overflows; the max subtraction keeps the winner at log 1 = 0."""
    out = masked_log_softmax(torch.tensor([[1e30, -1e30]]), torch.ones(1, 2, dtype=bool))
    assert out[0, 0] == 0.0
    assert out[0, 1] == float("-inf") or out[0, 1] < -1e29


@SETTINGS
@given(
    data=st.lists(
        st.tuples(st.floats(-BIG, BIG, allow_nan=False, width=32), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_masked_log_softmax_is_a_distribution_over_allowed(data):
    scores = torch.tensor([[s for s, _ in data]], dtype=torch.float32)
    allowed = torch.tensor([[a for _, a in data]])
    out = masked_log_softmax(scores, allowed)
    assert not torch.isnan(out).any()
    assert (out[~allowed] == float("-inf")).all()
    assert (out <= 0).all()
    if allowed.any():
        total = out[allowed].double().exp().sum().item()
        assert abs(total - 1.0) < 1e-5
        assert torch.isfinite(out[allowed]).any()


# --- top_by_score ------------------------------------------------------------------------------


def test_top_by_score_ties_go_to_lowest_index():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    allowed = torch.ones(2, 5, dtype=torch.bool)
    assert top_by_score(scores, allowed, 1).nonzero().tolist() == [[0, 1], [1, 0]]
    assert top_by_score(scores, allowed, 2)[0].nonzero().squeeze(1).tolist() == [1, 2]
    assert top_by_score(scores, allowed, 3)[1].nonzero().squeeze(1).tolist() == [0, 1, 2]
    only_later = torch.tensor([[False, False, True, True, True]] * 2)
    assert top_by_score(scores, only_later, 1).nonzero().tolist() == [[0, 2], [1, 2]]


def test_top_by_score_respects_allowed_and_k_beyond_allowed():
    scores = torch.tensor([[9.0, 1.0, 8.0, 2.0]])
    allowed = torch.tensor([[False, True, False, True]])
    assert top_by_score(scores, allowed, 1).tolist() == [[False, False, False, True]]
    assert top_by_score(scores, allowed, 3).tolist() == [[False, True, False, True]]
    assert not top_by_score(scores, torch.zeros_like(allowed), 2).any()


@SETTINGS
@given(
    values=st.lists(st.integers(-3, 3), min_size=1, max_size=10),
    allowed_bits=st.lists(st.booleans(), min_size=10, max_size=10),
    k=st.integers(1, 12),
)
def test_top_by_score_property(values, allowed_bits, k):
    n = len(values)
    scores = torch.tensor([values], dtype=torch.float32)
    allowed = torch.tensor([allowed_bits[:n]])
    chosen = top_by_score(scores, allowed, k)[0]
    # expected: allowed indices sorted by (-score, index), first k
    ranked = sorted((i for i in range(n) if allowed_bits[i]), key=lambda i: (-values[i], i))
    assert chosen.nonzero().squeeze(1).tolist() == sorted(ranked[:k])


# --- sample_without_replacement --------------------------------------------------------------


def pl_logprob(p: list[float], seq: tuple[int, ...]) -> float:
    """Plackett-Luce log-probability of drawing `seq` in order without replacement, in log space
    (1 - p would cancel catastrophically for a dominant position)."""
    logp = [math.log(x) if x > 0 else -math.inf for x in p]
    remaining = [i for i in range(len(p)) if p[i] > 0]
    out = 0.0
    for i in seq:
        top = max(logp[j] for j in remaining)
        lse = top + math.log(sum(math.exp(logp[j] - top) for j in remaining))
        out += logp[i] - lse
        remaining.remove(i)
    return out


def test_first_pick_frequencies_match_distribution():
    p = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])
    logp = torch.log(p)
    n = 4000
    choice = sample_without_replacement(logp.expand(n, -1).clone(), 1, seeded(0))
    assert torch.equal(choice.chosen.sum(1), torch.ones(n, dtype=torch.long))
    counts = choice.chosen.sum(0).double()
    assert counts[4] == 0  # zero probability is never drawn
    expected = n * p.double()
    chi2 = (((counts - expected) ** 2) / expected)[:4].sum().item()
    assert chi2 < 16.3  # chi-square, 3 degrees of freedom, p = 0.001
    torch.testing.assert_close(choice.logprob, logp[choice.chosen.float().argmax(1)])


def test_pl_logprob_of_k_draws_is_the_hand_computed_product():
    p = [0.4, 0.3, 0.2, 0.1]
    logp = torch.log(torch.tensor(p))
    n = 4000
    choice = sample_without_replacement(logp.expand(n, -1).clone(), 2, seeded(1))
    assert torch.equal(choice.chosen.sum(1), torch.full((n,), 2))
    # the reported log-prob is the PL probability of one of the two orders of the chosen pair
    pairs = [tuple(r.nonzero().squeeze(1).tolist()) for r in choice.chosen]
    seen: dict[tuple[int, int], int] = {}
    for (a, b), lp in zip(pairs, choice.logprob.tolist()):
        ab, ba = pl_logprob(p, (a, b)), pl_logprob(p, (b, a))
        if abs(lp - ab) < 1e-5:
            seq = (a, b)
        else:
            assert abs(lp - ba) < 1e-5, (a, b, lp, ab, ba)
            seq = (b, a)
        seen[seq] = seen.get(seq, 0) + 1
    # ... and the ordered sequences it identifies occur with their PL probabilities
    chi2 = 0.0
    for seq in itertools.permutations(range(4), 2):
        expected = n * math.exp(pl_logprob(p, seq))
        chi2 += (seen.get(seq, 0) - expected) ** 2 / expected
    assert chi2 < 32.9  # chi-square, 11 degrees of freedom, p = 0.001


def test_pl_logprob_all_draws():
    p = [0.5, 0.3, 0.2]
    choice = sample_without_replacement(torch.log(torch.tensor([p])), 3, seeded(2))
    assert choice.chosen.all()
    possible = [pl_logprob(p, s) for s in itertools.permutations(range(3))]
    assert min(abs(choice.logprob.item() - x) for x in possible) < 1e-5


def test_sample_k_beyond_support_takes_all_allowed():
    logp = torch.log(torch.tensor([[0.0, 0.7, 0.0, 0.3], [0.25, 0.25, 0.25, 0.25]]))
    choice = sample_without_replacement(logp, 3, seeded())
    assert choice.chosen[0].tolist() == [False, True, False, True]
    assert choice.chosen[1].sum() == 3
    assert torch.isfinite(choice.logprob).all()
    # taking both of row 0's positions: 0.7 * 1 or 0.3 * 1
    assert min(abs(choice.logprob[0].item() - math.log(q)) for q in (0.7, 0.3)) < 1e-5
    torch.testing.assert_close(choice.logprob[1], torch.tensor(math.log(1 / 24)))


def test_sample_is_reproducible_with_a_generator():
    logp = torch.log_softmax(torch.randn(6, 9, generator=seeded()), -1)
    a = sample_without_replacement(logp, 2, seeded(7))
    b = sample_without_replacement(logp, 2, seeded(7))
    assert torch.equal(a.chosen, b.chosen) and torch.equal(a.logprob, b.logprob)


@SETTINGS
@given(
    scores=st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=2, max_size=10),
    allowed_bits=st.lists(st.booleans(), min_size=10, max_size=10),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_sample_without_replacement_property(scores, allowed_bits, k, seed):
    n = len(scores)
    allowed = torch.tensor([allowed_bits[:n]])
    allowed[0, 0] = True
    logp = masked_log_softmax(torch.tensor([scores]), allowed)
    choice = sample_without_replacement(logp, k, seeded(seed))
    assert not (choice.chosen & ~allowed).any()
    assert choice.chosen.sum().item() == min(k, int(allowed.sum()))
    assert torch.isfinite(choice.logprob).all()
    assert choice.logprob.item() <= 1e-6
    # it is the Plackett-Luce log-prob of one ordering of the chosen set
    p = [math.exp(x) if math.isfinite(x) else 0.0 for x in logp[0].double().tolist()]
    idx = choice.chosen[0].nonzero().squeeze(1).tolist()
    orders = [pl_logprob(p, s) for s in itertools.permutations(idx)]
    assert min(abs(choice.logprob.item() - x) for x in orders) < 1e-4


# --- the hand rules --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_RULES)
@pytest.mark.parametrize("seed", [0, 1])
def test_rule_log_probs_are_a_distribution_over_candidates(name, seed):
    state = random_state(seed=seed)
    logp = make_rule(name).log_probs(state)
    assert logp.shape == state.candidates.shape
    assert not torch.isnan(logp).any()
    assert (logp[~state.candidates] == float("-inf")).all()
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(len(logp)))


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_rules_are_one_hot_at_their_argmax(name):
    state = random_state(seed=3, l=12)
    policy = make_rule(name)
    assert policy.deterministic
    logp = policy.log_probs(state)
    assert ((logp == 0) | (logp == float("-inf"))).all()
    assert torch.equal((logp == 0).sum(1), torch.ones(len(logp), dtype=torch.long))
    choice = policy.select(state, 1)
    best = logp.argmax(1)
    assert choice.chosen.gather(1, best[:, None]).all()
    assert (choice.logprob == 0).all()


def hand_scores(state: StepState, name: str) -> torch.Tensor:
    p = torch.softmax(state.logits.double(), -1)
    top2 = p.topk(2, -1).values
    return {
        "confidence": top2[..., 0],
        "margin": top2[..., 0] - top2[..., 1],
        "entropy": (p * torch.log(p.clamp_min(1e-300))).sum(-1),
        "left-to-right": -torch.arange(p.shape[1], dtype=torch.double).expand(p.shape[:2]),
    }[name]


@pytest.mark.parametrize("name", ["confidence", "margin", "entropy", "left-to-right"])
def test_deterministic_rule_picks_the_hand_computed_best(name):
    state = random_state(seed=4, l=12, b=6)
    scores = hand_scores(state, name).masked_fill(~state.candidates, float("-inf"))
    chosen = make_rule(name).select(state, 1).chosen
    assert torch.equal(chosen.float().argmax(1), scores.argmax(1))
    assert torch.equal(chosen.sum(1), torch.ones(6, dtype=torch.long))


def state_from_probs(probs: torch.Tensor, candidates: torch.Tensor | None = None) -> StepState:
    b, l, _ = probs.shape
    if candidates is None:
        candidates = torch.ones(b, l, dtype=torch.bool)
    return StepState(
        torch.zeros(b, l, dtype=torch.long),
        torch.log(probs),
        torch.zeros(b, l, 4),
        candidates,
        candidates,
        torch.ones(b, l, dtype=torch.bool),
        0,
    )


def test_confidence_margin_entropy_disagree_as_defined():
    # position 0: top 0.55, runner-up 0.44 (confident but split); position 1: 0.5 vs 0.25
    state = state_from_probs(torch.tensor([[[0.0, 0.55, 0.44, 0.01], [0.0, 0.5, 0.25, 0.25]]]))
    assert make_rule("confidence").select(state, 1).chosen.tolist() == [[True, False]]
    assert make_rule("margin").select(state, 1).chosen.tolist() == [[False, True]]
    assert make_rule("entropy").select(state, 1).chosen.tolist() == [[True, False]]
    # lowest entropy wins, not highest
    flat = state_from_probs(torch.tensor([[[0.0, 0.34, 0.33, 0.33], [0.0, 0.3, 0.69, 0.01]]]))
    assert make_rule("entropy").select(flat, 1).chosen.tolist() == [[False, True]]


@pytest.mark.parametrize("k_rule", [1, 3, 5, 50])
def test_topk_random_support(k_rule):
    state = random_state(seed=5, l=14, b=6)
    logp = make_rule(f"topk-random:{k_rule}").log_probs(state)
    support = torch.isfinite(logp)
    n_cand = state.candidates.sum(1)
    assert torch.equal(support.sum(1), n_cand.clamp(max=k_rule))
    # uniform on its support, which holds the most confident candidates
    torch.testing.assert_close(
        logp[support].exp(),
        (1.0 / n_cand.clamp(max=k_rule).float()).repeat_interleave(n_cand.clamp(max=k_rule)),
    )
    conf = torch.softmax(state.logits, -1).max(-1).values.masked_fill(~state.candidates, -1)
    inside = conf.masked_fill(~support, 2).min(1).values
    outside = conf.masked_fill(support, -1).max(1).values
    assert (inside >= outside).all()


def test_topk_random_samples_only_inside_its_support():
    state = random_state(seed=6, l=16, b=4, all_candidates=True)
    policy = make_rule("topk-random:3")
    support = torch.isfinite(policy.log_probs(state))
    gen = seeded()
    hits = torch.zeros_like(support, dtype=torch.long)
    for _ in range(200):
        chosen = policy.select(state, 1, gen).chosen
        assert not (chosen & ~support).any()
        hits += chosen
    assert ((hits > 0) == support).all()  # and it uses the whole support


def test_random_is_uniform_over_candidates():
    state = random_state(seed=7)
    logp = make_rule("random").log_probs(state)
    n = state.candidates.sum(1, keepdim=True).float()
    expected = (-torch.log(n)).expand_as(logp).masked_fill(~state.candidates, float("-inf"))
    torch.testing.assert_close(logp, expected)


def test_softmax_rule_is_softmax_of_confidence_over_tau():
    state = random_state(seed=8)
    conf = torch.softmax(state.logits, -1).max(-1).values
    for tau in (0.5, 0.05):
        logp = make_rule(f"softmax:{tau}").log_probs(state)
        expected = torch.log_softmax((conf / tau).masked_fill(~state.candidates, -1e9), -1)
        expected = expected.masked_fill(~state.candidates, float("-inf"))
        torch.testing.assert_close(logp, expected)


def test_tiny_softmax_temperature_is_stable():
    state = random_state(seed=9)
    logp = make_rule("softmax:1e-9").log_probs(state)
    assert not torch.isnan(logp).any()
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(len(logp)))
    best = make_rule("confidence").log_probs(state)
    assert torch.equal(logp.argmax(1), best.argmax(1))


def test_threshold_takes_all_above_and_at_least_one():
    probs = torch.tensor(
        [
            [[0.0, 0.95, 0.05], [0.0, 0.6, 0.4], [0.0, 0.92, 0.08], [0.0, 0.99, 0.01]],
            [[0.0, 0.5, 0.5], [0.0, 0.7, 0.3], [0.0, 0.6, 0.4], [0.0, 0.8, 0.2]],
        ]
    )
    candidates = torch.tensor([[True, True, True, False], [True, True, True, True]])
    choice = make_rule("threshold:0.9").select(state_from_probs(probs, candidates), 1)
    assert choice.chosen.tolist() == [[True, False, True, False], [False, False, False, True]]
    assert (choice.logprob == 0).all()


def test_make_rule_names_and_parameters():
    assert make_rule("topk-random:7").k == 7
    assert make_rule("softmax:0.25").tau == 0.25
    assert make_rule("threshold:0.8").threshold == 0.8
    for name in ["random", "confidence", "margin", "entropy", "left-to-right"]:
        assert make_rule(name).name == name
    assert make_rule("softmax:0.5").name == "softmax:0.5"
    assert make_rule("topk-random:3").name == "topk-random:3"


@pytest.mark.parametrize("bad", ["nonsense", "max-confidence", "confidence:3", "", "Random"])
def test_unknown_rule_name_is_an_error_listing_the_valid_names(bad):
    with pytest.raises(ValueError, match="unknown policy") as err:
        make_rule(bad)
    assert repr(bad) in str(err.value)
    # the user-facing form (the CLI goes through resolve_policy) lists every valid name
    with pytest.raises(UpoError) as err:
        resolve_policy(bad or "nonsense", mdm=None)
    message = str(err.value)
    assert "\n" not in message
    for name in RULE_NAMES:
        assert name in message


@pytest.mark.parametrize(
    "bad",
    [
        "softmax:0",
        "softmax:-1",
        "softmax:x",
        "topk-random:0",
        "topk-random:2.5",
        "threshold:1.5",
        "threshold:0",
    ],
)
def test_make_rule_bad_parameter_is_a_value_error(bad):
    with pytest.raises(ValueError, match="bad policy"):
        make_rule(bad)


@SETTINGS
@given(
    name=st.sampled_from(ALL_RULES),
    b=st.integers(1, 3),
    l=st.integers(1, 9),
    seed=st.integers(0, 10_000),
    k=st.integers(1, 4),
)
def test_rule_select_property(name, b, l, seed, k):
    state = random_state(b=b, l=l, seed=seed)
    policy = make_rule(name)
    logp = policy.log_probs(state)
    choice = policy.select(state, k, seeded(seed))
    assert not (choice.chosen & ~state.candidates).any()
    n_cand = state.candidates.sum(1)
    if name.startswith("threshold"):
        assert (choice.chosen.sum(1) >= 1).all()
    elif name.startswith("topk-random"):
        kk = int(name.split(":")[1])
        assert torch.equal(choice.chosen.sum(1), n_cand.clamp(max=min(k, kk)))
    else:
        assert torch.equal(choice.chosen.sum(1), n_cand.clamp(max=k))
    assert torch.isfinite(choice.logprob).all() and (choice.logprob <= 1e-6).all()
    if k == 1 and not policy.deterministic:
        torch.testing.assert_close(choice.logprob, logp[choice.chosen])
