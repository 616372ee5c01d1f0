"""Behaviour of the learned policy g_phi: its distribution, the Top-K restriction, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_tiny
from upo.errors import UpoError
from upo.policies.base import StepState
from upo.policies.learned import (
    LearnedPolicy,
    PolicyConfig,
    PolicyNet,
    inputs_from_state,
    load_policy,
    save_policy,
)


def make_net(feature_dim: int = 32, seed: int = 0, restrict_topk=None, width=16, spread=4.0):
    torch.manual_seed(seed)
    net = PolicyNet(
        PolicyConfig(
            feature_dim, width=width, n_heads=2, mlp_hidden=16, restrict_topk=restrict_topk
        )
    )
    with torch.no_grad():
        net.mlp[-1].weight.mul_(spread)
    net.eval()
    return net


def first_state(mdm, puzzles) -> StepState:
    """The first decoding step of `puzzles` (0 = blank) under `mdm`."""
    attention = torch.ones_like(puzzles, dtype=torch.bool)
    with torch.no_grad():
        logits, features = mdm.forward(puzzles, attention)
    masked = puzzles == mdm.mask_id
    return StepState(puzzles, logits, features, masked, masked.clone(), attention, 0)


def k_most_confident(state: StepState, k: int) -> torch.Tensor:
    """Reference implementation: the k candidates with the highest top-1 token probability."""
    conf = torch.softmax(state.logits, -1).max(-1).values
    out = torch.zeros_like(state.candidates)
    for row in range(conf.shape[0]):
        cands = state.candidates[row].nonzero().squeeze(1).tolist()
        cands.sort(key=lambda i: (-float(conf[row, i]), i))
        out[row, cands[:k]] = True
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.3, 2.0])
def test_log_probs_are_a_distribution_over_candidates(mdm4, puzzles4, temperature):
    puzzles, _ = puzzles4
    state = first_state(mdm4, puzzles)
    policy = LearnedPolicy(make_net(), mdm4.mask_id, temperature=temperature, greedy=False)
    logp = policy.log_probs(state)
    assert torch.isfinite(logp[state.candidates]).all()
    assert torch.isneginf(logp[~state.candidates]).all()
    assert torch.allclose(logp.exp().sum(1), torch.ones(len(puzzles)), atol=1e-5)
    # it is softmax(score / temperature) over the candidates
    scores = policy.net(policy.inputs(state)).detach()
    for row in range(len(puzzles)):
        c = state.candidates[row]
        expected = torch.log_softmax(scores[row, c] / temperature, 0)
        assert torch.allclose(logp[row, c], expected, atol=1e-5)


def test_huge_scores_stay_finite(mdm4, puzzles4):
    puzzles, _ = puzzles4
    state = first_state(mdm4, puzzles)
    net = make_net(spread=1e6)
    logp = LearnedPolicy(net, mdm4.mask_id, temperature=0.1, greedy=False).log_probs(state)
    assert not torch.isnan(logp).any()
    assert torch.allclose(logp.exp().sum(1), torch.ones(len(puzzles)), atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_restrict_topk_limits_support_to_k_most_confident(mdm4, puzzles4, k):
    puzzles, _ = puzzles4  # 3 to 12 blanks: k = 5 also covers rows with fewer than k candidates
    state = first_state(mdm4, puzzles)
    restricted = LearnedPolicy(make_net(restrict_topk=k), mdm4.mask_id, greedy=False)
    full = LearnedPolicy(make_net(restrict_topk=None), mdm4.mask_id, greedy=False)
    logp = restricted.log_probs(state)
    support = torch.isfinite(logp)
    expected = k_most_confident(state, k)
    assert torch.equal(support, expected)
    assert torch.equal(support.sum(1), state.candidates.sum(1).clamp(max=k))
    # within the support: the unrestricted policy renormalised
    logp_full = full.log_probs(state)
    for row in range(len(puzzles)):
        s = support[row]
        assert torch.allclose(logp[row, s], torch.log_softmax(logp_full[row, s], 0), atol=1e-5)
    # sampled and greedy choices stay inside the support
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        choice = restricted.select(state, 1, gen)
        assert not (choice.chosen & ~support).any()
        assert torch.allclose(choice.logprob, logp[choice.chosen], atol=1e-5)
    greedy = LearnedPolicy(restricted.net, mdm4.mask_id, greedy=True).select(state, 1)
    assert not (greedy.chosen & ~support).any()
    assert torch.equal(greedy.chosen.float().argmax(1), logp.argmax(1))


def test_scores_do_not_depend_on_the_rest_of_the_batch(mdm4, puzzles4):
    puzzles, _ = puzzles4
    net = make_net()
    batched = net(inputs_from_state(first_state(mdm4, puzzles), mdm4.mask_id, None)).detach()
    for row in range(len(puzzles)):
        one = net(inputs_from_state(first_state(mdm4, puzzles[row : row + 1]), 0, None)).detach()
        assert torch.allclose(batched[row], one[0], atol=2e-2, rtol=2e-2)


@pytest.mark.numerics
def test_save_load_round_trip(tmp_path, mdm4, puzzles4):
    puzzles, _ = puzzles4
    net = make_net(restrict_topk=3)
    path = tmp_path / "policy"
    save_policy(path, net, mdm4.fingerprint(), {"note": "test"})
    loaded = load_policy(path, mdm4)
    assert loaded.cfg == net.cfg
    assert not loaded.training
    net.bf16 = loaded.bf16  # the policy runs in its MDM's precision (tested below)
    inp = inputs_from_state(first_state(mdm4, puzzles), mdm4.mask_id, 3)
    with torch.no_grad():
        assert torch.equal(loaded(inp), net(inp))
        assert torch.equal(loaded.log_probs(inp, 0.8), net.log_probs(inp, 0.8))
    meta = json.loads((path / "meta.json").read_text())
    assert meta["mdm_fingerprint"] == mdm4.fingerprint() and meta["note"] == "test"
    assert torch.equal(load_policy(path, dtype="float32")(inp), loaded(inp))  # no MDM: no check


@pytest.mark.numerics
@pytest.mark.parametrize("bf16", [False, True])
def test_policy_runs_in_the_precision_of_its_mdm(tmp_path, puzzles4, bf16):
    """A checkpoint saved from a bf16 network runs in float32 on a float32 MDM and vice versa:
    weights are float32 on disk, only the arithmetic follows the MDM (its dtype setting)."""
    puzzles, _ = puzzles4
    mdm = make_tiny("sudoku4", seed=0, bf16=bf16)
    trained = make_net()
    trained.bf16 = not bf16  # trained in the other precision
    path = tmp_path / "policy"
    save_policy(path, trained, mdm.fingerprint(), {})
    loaded = load_policy(path, mdm)
    assert loaded.bf16 is bf16
    twin = make_net()
    twin.bf16 = bf16
    inp = inputs_from_state(first_state(mdm, puzzles), mdm.mask_id, None)
    with torch.no_grad():
        assert torch.equal(loaded(inp), twin(inp))  # exactly a network built in that precision
        other = trained(inp)
        # the two precisions agree to bf16 rounding, and do round differently
        assert torch.allclose(loaded(inp), other, atol=0.05 * float(other.abs().max()))
        assert not torch.equal(loaded(inp), other)
    assert load_policy(path, mdm, dtype="float32").bf16 is False  # an explicit dtype wins


def test_load_refuses_a_different_mdm(tmp_path, mdm4):
    path = tmp_path / "policy"
    save_policy(path, make_net(), mdm4.fingerprint(), {})
    other = make_tiny("sudoku4", seed=11)  # same feature width, other weights
    assert other.feature_dim == mdm4.feature_dim
    with pytest.raises(UpoError, match=f"trained on MDM {mdm4.fingerprint()}") as err:
        load_policy(path, other)
    assert str(path) in str(err.value) and other.fingerprint() in str(err.value)
    narrow = make_tiny("sudoku4", seed=0, d_model=16)
    with pytest.raises(UpoError, match="width 32, this MDM has 16"):
        load_policy(path, narrow)


def test_load_rejects_what_is_not_a_policy(tmp_path, mdm4):
    with pytest.raises(UpoError, match="not found"):
        load_policy(tmp_path / "missing", mdm4)
    from upo.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "mdm", mdm4, {"kind": "tiny"}, {})
    with pytest.raises(UpoError, match="not a policy checkpoint"):
        load_policy(tmp_path / "mdm", mdm4)


def test_parameter_count_scales_with_width():
    counts = [
        PolicyNet(PolicyConfig(32, width=w, n_heads=2, mlp_hidden=16)).num_parameters()
        for w in (8, 16, 32, 64)
    ]
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert counts[3] > 3 * counts[2]  # the width x width layers dominate
    net = PolicyNet(PolicyConfig(32, width=16, n_heads=2, mlp_hidden=16))
    assert net.num_parameters() == sum(p.numel() for p in net.parameters())
    # every extra MDM feature costs one projection column
    wider = PolicyNet(PolicyConfig(33, width=16, n_heads=2, mlp_hidden=16))
    assert wider.num_parameters() - net.num_parameters() == 16


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        PolicyNet(PolicyConfig(32, width=10, n_heads=4))
    with pytest.raises(ValueError, match="restrict_topk"):
        PolicyNet(PolicyConfig(32, width=16, n_heads=2, restrict_topk=0))
