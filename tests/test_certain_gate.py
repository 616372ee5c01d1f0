"""`certain_above`: near-certain cells are filled without asking the network, and GRPO trains only
on the states that remain decisions."""

from __future__ import annotations

import pytest
import torch
import yaml

from test_grpo import make_cfg, no_sync, seeded, write_sudoku4_setup
from upo.config import load_config
from upo.decode import unmask
from upo.io_utils import read_jsonl
from upo.models.registry import load_mdm
from upo.policies.base import StepState, top_by_score
from upo.policies.learned import (
    LearnedPolicy,
    PolicyConfig,
    PolicyNet,
    allowed_positions,
    is_decision,
    load_policy,
)
from upo.policies.rules import confidence, make_rule
from upo.rl.grpo import UPOConfig, group_advantages, train_upo, update
from upo.rl.pretrain import visit_states
from upo.rl.references import make_reference
from upo.rl.rollout import collect


def gated_net(
    feature_dim: int, certain_above: float, seed: int = 0, bf16: bool = True
) -> PolicyNet:
    torch.manual_seed(seed)
    cfg = PolicyConfig(
        feature_dim=feature_dim, width=16, n_heads=2, mlp_hidden=16, certain_above=certain_above
    )
    net = PolicyNet(cfg, bf16=bf16)
    with torch.no_grad():
        net.mlp[-1].weight.mul_(8.0)  # far from max-confidence where the gate is open
    return net


def first_state(mdm, tokens) -> StepState:
    with torch.no_grad():
        logits, feats = mdm(tokens)
    masked = tokens == mdm.mask_id
    # the decode loop rides along as in upo.decode.unmask: the lookahead search calls it
    return StepState(
        tokens, logits, feats, masked, masked, torch.ones_like(masked), 0, decode=unmask
    )


@pytest.mark.parametrize("restrict_topk", [None, 3])
def test_gate_leaves_only_the_most_confident_cell_when_it_is_certain(mdm4, puzzles4, restrict_topk):
    puzzles, _ = puzzles4
    state = first_state(mdm4, puzzles)
    conf = confidence(state)
    top = conf.masked_fill(~state.candidates, 0.0).amax(1)
    threshold = float(top.median())  # some rows above it, some not
    allowed = allowed_positions(state, restrict_topk, threshold)
    ungated = allowed_positions(state, restrict_topk)
    best = top_by_score(conf, state.candidates, 1)
    certain = top > threshold
    assert certain.any() and (~certain).any()
    assert torch.equal(allowed[certain], best[certain])
    assert torch.equal(allowed[~certain], ungated[~certain])
    assert not (allowed & ~state.candidates).any()


def test_fully_gated_policy_decodes_as_max_confidence(mdm4, puzzles4):
    # a threshold every state clears: whatever the (random) network says, the order is the rule's
    puzzles, _ = puzzles4
    net = gated_net(mdm4.feature_dim, certain_above=1e-6)
    gated = unmask(mdm4, puzzles, LearnedPolicy(net, mdm4.mask_id, greedy=True))
    rule = unmask(mdm4, puzzles, make_rule("confidence"))
    free = unmask(mdm4, puzzles, LearnedPolicy(gated_net(mdm4.feature_dim, 0.999999), mdm4.mask_id))
    assert torch.equal(gated.order, rule.order)
    assert not torch.equal(free.order, rule.order)  # the network alone does decide differently


def test_rollout_marks_gated_states_and_update_trains_only_on_decisions(mdm4, puzzles4):
    puzzles, _ = puzzles4
    tokens = puzzles.repeat(2, 1)
    state = first_state(mdm4, tokens)
    top = confidence(state).masked_fill(~state.candidates, 0.0).amax(1)
    # float32, so that differently composed batches give the same gradient bits up to rounding
    net = gated_net(mdm4.feature_dim, certain_above=float(top.median()), bf16=False)
    sampler = LearnedPolicy(net, mdm4.mask_id, greedy=False)
    traj, states = collect(
        mdm4, tokens, sampler, None, None, seeded(0), certain_above=net.cfg.certain_above
    )
    decision = is_decision(states.inputs)
    assert decision.any() and (~decision).any()
    # a state with one allowed cell is taken with probability 1: log-prob 0, no choice made
    assert torch.equal(states.sample_logp[~decision], torch.zeros(int((~decision).sum())))
    kept = states.take(decision)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    adv = group_advantages(torch.arange(len(tokens), dtype=torch.float32), 2, False)
    # summed over steps, the gated states add nothing to the gradient (their ratio is 1 with no
    # gradient: they only shift the loss by a constant)
    cfg_sum = make_cfg("none", group_size=2, inner_steps=1, step_aggregation="sum")
    update(net, opt, states, adv, make_reference("none"), cfg_sum, no_sync)
    grads_full = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    update(net, opt, kept, adv, make_reference("none"), cfg_sum, no_sync)
    grads_part = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    assert any(g.abs().max() > 0 for g in grads_part)
    for a, b in zip(grads_full, grads_part, strict=True):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-5)


def test_nothing_left_to_decide_is_a_no_op_update(mdm4, puzzles4):
    puzzles, _ = puzzles4
    net = gated_net(mdm4.feature_dim, certain_above=1e-6)
    sampler = LearnedPolicy(net, mdm4.mask_id, greedy=False)
    _, states = collect(mdm4, puzzles, sampler, None, None, seeded(0), certain_above=1e-6)
    none = states.take(is_decision(states.inputs))
    assert len(none) == 0
    before = [p.clone() for p in net.parameters()]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    adv = torch.ones(len(puzzles))
    stats = update(net, opt, none, adv, make_reference("none"), make_cfg("none"), no_sync)
    assert stats.entropy == 0.0 and stats.clip_frac == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_training_with_the_gate_logs_decisions_and_keeps_it_in_the_checkpoint(tmp_path):
    config = write_sudoku4_setup(tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["policy"]["certain_above"] = 0.3
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    train_upo(load_config(UPOConfig, config), out)
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if "states" in r]
    assert rows and all(r["states"] <= r["mdm_forwards"] for r in rows)
    net = load_policy(out, load_mdm(tmp_path / "mdm"))
    assert net.cfg.certain_above == 0.3


def test_certain_above_outside_zero_one_is_rejected():
    with pytest.raises(ValueError, match="certain_above"):
        PolicyConfig(feature_dim=8, certain_above=1.0).validate()


def test_pretraining_states_with_the_gate_are_the_decisions_of_the_ungated_visit(mdm4, puzzles4):
    """Max-confidence takes the same path with or without the gate, so the gated visit keeps
    exactly the ungated states whose most confident cell is not above the threshold."""
    puzzles, _ = puzzles4
    rule = make_rule("confidence")
    ungated = visit_states(mdm4, puzzles.numpy(), rule, rule, seed=0)
    top = ungated.inputs.top_probs[:, :, 0].masked_fill(~ungated.inputs.masked, 0.0).amax(1)
    threshold = float(top.median())
    gated = visit_states(mdm4, puzzles.numpy(), rule, rule, seed=0, certain_above=threshold)
    expected = (top <= threshold) & (ungated.inputs.masked.sum(1) > 1)
    assert 0 < len(gated) < len(ungated)
    assert len(gated) == int(expected.sum())
    assert bool(is_decision(gated.inputs).all())
    assert torch.equal(gated.inputs.masked, ungated.inputs.masked[expected])
