"""The trial-decode search rule `lookahead:K[:GATE[:DEPTH]]`: what it chooses, what it costs, and
that it decodes each item as if alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_certain_gate import first_state
from upo.decode import unmask
from upo.errors import UpoError
from upo.evaluate import evaluate_policy
from upo.models.denoiser import TimedDenoiser
from upo.policies.lookahead import TrialDecode
from upo.policies.resolve import resolve_policy
from upo.policies.rules import make_rule
from upo.tasks.base import Batch
from upo.tasks.registry import get_task


@pytest.mark.parametrize("depth", [None, 0, 4])
def test_choice_is_the_candidate_whose_completion_the_mdm_finds_likeliest(mdm9, puzzles9, depth):
    """Recomputed by hand, one candidate and one separate greedy decode at a time; with a depth,
    the trial decode stops after that many steps and only they count."""
    puzzles, _ = puzzles9
    state = first_state(mdm9, puzzles)
    policy = TrialDecode(mdm9, k=3, gate=1.0, depth=depth)
    chosen = policy.select(state, 1).chosen.float().argmax(1)
    conf = state.probs.amax(-1).masked_fill(~state.masked, -1.0)
    for i in range(len(puzzles)):
        values = {}
        for c in torch.sort(conf[i], descending=True, stable=True).indices[:3].tolist():
            logp = torch.log_softmax(state.logits[i, c], -1)
            trial = puzzles[i].clone()
            trial[c] = int(logp.argmax())
            done = greedy_steps(mdm9, trial, depth)
            values[c] = float(logp.max()) + done
        assert int(chosen[i]) == max(values, key=values.get)


def greedy_steps(mdm, tokens, depth):
    """The summed log max-probability of the first `depth` (all if None) max-confidence fills,
    one cell and one forward at a time, without `unmask`."""
    tokens, total, steps = tokens.clone(), 0.0, 0
    while (tokens == mdm.mask_id).any() and (depth is None or steps < depth):
        logp = torch.log_softmax(mdm.forward(tokens[None])[0][0].float(), -1)
        best, digit = logp.max(-1)
        best = best.masked_fill(tokens != mdm.mask_id, float("-inf"))
        cell = int(best.argmax())
        tokens[cell] = digit[cell]
        total, steps = total + float(best[cell]), steps + 1
    return total


@pytest.mark.parametrize("depth", [None, 5])
def test_extra_forwards_are_those_of_the_trial_decodes(mdm9, puzzles9, depth):
    """At a state where every item decides, each item's extra NFE is the sum of its K trial
    decodes' forwards: one per cell still masked after the candidate is filled, at most DEPTH."""
    puzzles, _ = puzzles9
    state = first_state(mdm9, puzzles)
    choice = TrialDecode(mdm9, k=3, gate=1.0, depth=depth).select(state, 1)
    blanks = (puzzles == mdm9.mask_id).sum(1)
    steps = blanks - 1 if depth is None else (blanks - 1).clamp(max=depth)
    assert torch.equal(choice.extra_nfe, 3 * steps)


def test_a_depth_past_the_last_blank_is_the_full_search(mdm9, puzzles9):
    puzzles, _ = puzzles9
    full = unmask(mdm9, puzzles, resolve_policy("lookahead:2:0.9", mdm9))
    deep = unmask(mdm9, puzzles, resolve_policy("lookahead:2:0.9:81", mdm9))
    assert torch.equal(full.order, deep.order)
    assert torch.equal(full.nfe, deep.nfe)


def test_decode_nfe_counts_outer_steps_plus_trials(mdm4, puzzles4):
    puzzles, _ = puzzles4
    greedy = unmask(mdm4, puzzles, make_rule("confidence"))
    search = unmask(mdm4, puzzles, TrialDecode(mdm4, k=2, gate=1.0))
    blanks = (puzzles == mdm4.mask_id).sum(1)
    assert torch.equal(greedy.nfe, blanks)
    # every step with two or more cells left runs two trial decodes
    assert (search.nfe > blanks).all() == bool((blanks > 1).all())
    assert (search.nfe >= blanks).all()


@pytest.mark.parametrize("name", ["lookahead:3:0", "lookahead:1:1"])
def test_without_decisions_or_alternatives_it_is_max_confidence(mdm9, puzzles9, name):
    """Gate 0: no state is a decision. K = 1: the only candidate tried is the most confident one.
    Either way the order is max-confidence's (K = 1 still pays for its trial)."""
    puzzles, _ = puzzles9
    greedy = unmask(mdm9, puzzles, make_rule("confidence"))
    policy = resolve_policy(name, mdm9)
    search = unmask(mdm9, puzzles, policy)
    assert torch.equal(search.tokens, greedy.tokens)
    assert torch.equal(search.order, greedy.order)
    if name.endswith(":0"):
        assert torch.equal(search.nfe, greedy.nfe)
    else:
        assert (search.nfe > greedy.nfe).all()


def test_batched_equals_one_by_one(mdm9, puzzles9):
    puzzles, _ = puzzles9
    policy = TrialDecode(mdm9, k=2, gate=0.9)
    batched = unmask(mdm9, puzzles, policy)
    for i in range(len(puzzles)):
        alone = unmask(mdm9, puzzles[i : i + 1], policy)
        assert torch.equal(alone.tokens[0], batched.tokens[i])
        assert torch.equal(alone.order[0], batched.order[i])
        assert int(alone.nfe[0]) == int(batched.nfe[i])


def test_several_positions_per_step_keep_the_tried_candidates_first(mdm9, puzzles9):
    """With k = 2 per step the best trial goes first and the second pick is the next best trial,
    not whichever untried cell has the lowest index."""
    puzzles, _ = puzzles9
    state = first_state(mdm9, puzzles)
    policy = TrialDecode(mdm9, k=2, gate=1.0)
    scores, _ = policy.scores_and_cost(state)
    chosen = policy.select(state, 2).chosen
    conf = state.probs.amax(-1).masked_fill(~state.masked, -1.0)
    for i in range(len(puzzles)):
        top2 = set(torch.sort(conf[i], descending=True, stable=True).indices[:2].tolist())
        assert set(chosen[i].nonzero().squeeze(1).tolist()) == top2
        assert (scores[i][list(top2)] > 2.0).all()


def test_eval_reports_the_search_cost(mdm4, puzzles4):
    puzzles, solutions = puzzles4
    task = get_task("sudoku4")
    batch = Batch(puzzles.numpy(), solutions.numpy(), np.ones(puzzles.shape, bool))
    plain = evaluate_policy(mdm4, task, batch, make_rule("confidence"))
    search = evaluate_policy(mdm4, task, batch, TrialDecode(mdm4, k=3, gate=1.0))
    assert search.nfe > plain.nfe


@pytest.mark.parametrize(
    "name,needle",
    [
        ("lookahead:0", "K must be at least 1"),
        ("lookahead:three", "K and DEPTH must be integers"),
        ("lookahead:3:1.5", "gate must be a probability"),
        ("lookahead", "expected lookahead:K"),
        ("lookahead:3:0.9:1:2", "expected lookahead:K"),
        ("lookahead:3:0.9:deep", "DEPTH must be integers"),
        ("lookahead:3:0.9:-1", "DEPTH must be at least 0"),
    ],
)
def test_bad_lookahead_names_are_one_clear_error(mdm4, name, needle):
    with pytest.raises(UpoError, match=needle):
        resolve_policy(name, mdm4)


def test_asking_the_same_state_again_runs_no_more_trials(mdm9, puzzles9):
    """Pre-training asks the visitor (select) and then the reference (log_probs, greedy_scores)
    about one state; the search runs once."""
    puzzles, _ = puzzles9
    counting = TimedDenoiser(mdm9)
    state = first_state(mdm9, puzzles)
    policy = TrialDecode(counting, k=2, gate=1.0)
    first = policy.select(state, 1)
    rows = counting.rows
    assert rows > 0
    again = policy.greedy_scores(state)
    policy.log_probs(state)
    assert counting.rows == rows
    assert torch.equal(again, policy.scores_and_cost(state)[0])
    assert torch.equal(first.chosen, policy.select(state, 1).chosen)
    other = TrialDecode(counting, k=3, gate=1.0)
    other.select(state, 1)
    assert counting.rows > rows  # another K is another search
