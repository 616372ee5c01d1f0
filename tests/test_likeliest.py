"""The MDM's log-likelihood of its own decode (Trajectory.token_loglik) and the "likeliest of N"
solve rate that ranks several sampled decodes by it without looking at the answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from upo.decode import unmask
from upo.evaluate import decode_in_batches, evaluate_policy, likeliest_sample_solved
from upo.policies.rules import make_rule
from upo.tasks.base import Batch
from upo.tasks.registry import get_task


def replayed_loglik(mdm, puzzle: torch.Tensor, traj_tokens, traj_order) -> float:
    """Re-run the MDM on every state of one decode, rebuilt from the final tokens and the reveal
    order, and add up the log-probability of the token each step filled."""
    total = 0.0
    for step in range(int(traj_order.max()) + 1):
        state = torch.where(traj_order >= step, torch.full_like(puzzle, mdm.mask_id), traj_tokens)
        state = torch.where(traj_order < 0, puzzle, state)
        logits, _ = mdm.forward(state[None], None)
        logp = torch.log_softmax(logits[0].float(), -1)
        for pos in (traj_order == step).nonzero().squeeze(1).tolist():
            total += float(logp[pos, traj_tokens[pos]])
    return total


@pytest.mark.parametrize(
    "rule,kw",
    [
        ("confidence", {}),
        ("softmax:0.5", {"token_temperature": 1.0}),
        ("random", {"k": 2}),
    ],
)
def test_token_loglik_is_the_sum_over_steps_of_the_filled_tokens_log_prob(mdm4, puzzles4, rule, kw):
    puzzles, _ = puzzles4
    gen = torch.Generator().manual_seed(3)
    traj = unmask(mdm4, puzzles, make_rule(rule), generator=gen, **kw)
    assert (traj.token_loglik < 0).all()
    for i in range(len(puzzles)):
        expect = replayed_loglik(mdm4, puzzles[i], traj.tokens[i], traj.order[i])
        assert traj.token_loglik[i].item() == pytest.approx(expect, abs=1e-4)


def test_token_loglik_batched_equals_one_by_one(mdm9, puzzles9):
    puzzles, _ = puzzles9
    batched = unmask(mdm9, puzzles, make_rule("confidence"))
    for i in range(len(puzzles)):
        alone = unmask(mdm9, puzzles[i : i + 1], make_rule("confidence"))
        assert alone.token_loglik[0].item() == pytest.approx(batched.token_loglik[i].item(), 1e-5)


def test_nothing_to_fill_has_loglik_zero(mdm4, puzzles4):
    _, solutions = puzzles4
    assert torch.equal(
        unmask(mdm4, solutions, make_rule("confidence")).token_loglik, torch.zeros(8)
    )


def test_likeliest_sample_is_the_one_with_the_highest_loglik():
    solved = np.array([[True, False, False], [False, True, False], [True, True, False]])
    loglik = np.array([[-5.0, -1.0, -3.0], [-2.0, -1.0, -9.0], [-4.0, -4.0, -7.0]])
    # item 0: sample 1 is likeliest and unsolved; item 1: sample 1, solved; item 2: a tie, the first
    assert likeliest_sample_solved(solved, loglik).tolist() == [False, True, True]


def test_evaluate_reports_the_likeliest_of_n_from_the_same_samples(mdm4, puzzles4):
    puzzles, solutions = puzzles4
    task = get_task("sudoku4")
    batch = Batch(puzzles.numpy(), solutions.numpy(), np.ones(puzzles.shape, bool))
    policy = make_rule("softmax:0.5")
    res = evaluate_policy(mdm4, task, batch, policy, batch_size=3, seed=7, pass_at=4)
    solved, loglik = [], []
    for seed in range(7, 11):
        out, _, _, ll = decode_in_batches(mdm4, batch, policy, 3, seed=seed)
        solved.append(task.solved(batch, out))
        loglik.append(ll)
    solved, loglik = np.stack(solved, 1), np.stack(loglik, 1)
    assert len(set(map(tuple, loglik.round(4).tolist()))) > 1  # the samples differ
    expect = solved[np.arange(len(solved)), loglik.argmax(1)]
    assert np.array_equal(res.likeliest_solved, expect)
    summary = res.summary()["likeliest_of_n"]
    assert summary["n"] == 4
    assert summary["solve_rate"] == pytest.approx(expect.mean(), abs=1e-4)
    assert summary["solve_ci95"][0] <= summary["solve_rate"] <= summary["solve_ci95"][1]
    assert summary["solve_rate"] <= res.pass_at[-1] + 1e-9  # choosing blind never beats the oracle


def test_a_single_sample_reports_no_likeliest_of_n(mdm4, puzzles4):
    puzzles, solutions = puzzles4
    batch = Batch(puzzles.numpy(), solutions.numpy(), np.ones(puzzles.shape, bool))
    res = evaluate_policy(mdm4, get_task("sudoku4"), batch, make_rule("confidence"))
    assert res.likeliest_solved is None and "likeliest_of_n" not in res.summary()
