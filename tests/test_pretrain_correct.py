"""Correctness-supervised pre-training (`target: correct`): the labels recorded during rollouts, the
any-right loss, and that it teaches the one right order on the toy chain task."""

from __future__ import annotations

import math

import pytest
import torch

from toy_denoiser import ChainDenoiser
from upo.decode import unmask
from upo.policies.learned import LearnedPolicy, PolicyConfig, PolicyNet
from upo.policies.rules import make_rule
from upo.rl.pretrain import PretrainConfig, any_correct_nll, pretrain_loss, top1_correct
from upo.rl.rollout import collect


def chain_states(mdm: ChainDenoiser, n: int, rule: str = "random", seed: int = 0):
    tokens = mdm.all_masked(n)
    answers = mdm.target.expand(n, -1).clone()
    gen = torch.Generator().manual_seed(seed)
    _, states = collect(
        mdm, tokens, make_rule(rule), make_rule("confidence"), None, gen, answers=answers
    )
    return states


def test_correct_labels_are_argmax_equals_answer_while_on_track():
    mdm = ChainDenoiser(seq_len=5)
    states = chain_states(mdm, 16)
    target = mdm.target
    for i in range(len(states)):
        masked = states.inputs.masked[i]
        # Rebuild the state's tokens: unmasked positions hold what was filled before this step.
        filled_before = states.action[
            (states.item == states.item[i]) & (states.step < states.step[i])
        ]
        revealed = torch.zeros_like(masked)
        revealed[filled_before] = True
        assert torch.equal(revealed, ~masked)
        logits, _ = mdm.forward(torch.where(masked, 0, target)[None])
        right_now = (logits[0].argmax(-1) == target) & masked
        # On this toy model a position filled while its predecessor was masked is filled wrongly.
        ready_when_filled = []
        for s in range(int(states.step[i])):
            row = (states.item == states.item[i]) & (states.step == s)
            pos = int(states.action[row])
            ready_when_filled.append(pos == 0 or bool(~states.inputs.masked[row][0, pos - 1]))
        on_track = all(ready_when_filled)
        expected = right_now if on_track else torch.zeros_like(right_now)
        assert torch.equal(states.correct[i], expected), i


def test_any_correct_nll_value_and_dropped_states():
    logp = torch.log_softmax(torch.tensor([[0.0, 1.0, 2.0], [0.5, 0.0, -1.0]]), dim=1)
    correct = torch.tensor([[True, False, True], [False, False, False]])
    loss = any_correct_nll(logp, correct)
    assert loss.shape == (1,)  # the state with no right position teaches nothing and is dropped
    expected = -math.log((math.exp(0.0) + math.exp(2.0)) / sum(math.exp(x) for x in (0, 1, 2)))
    assert abs(loss.item() - expected) < 1e-5


def test_pointwise_term_is_logistic_loss_on_masked_positions_of_on_track_states():
    mdm = ChainDenoiser(seq_len=5)
    states = chain_states(mdm, 4)
    torch.manual_seed(0)
    net = PolicyNet(PolicyConfig(feature_dim=mdm.feature_dim, width=16, n_heads=2, mlp_hidden=16))
    listwise_only = pretrain_loss(PretrainConfig(target="correct"), net, states)
    both = pretrain_loss(PretrainConfig(target="correct", pointwise_weight=2.0), net, states)
    with torch.no_grad():
        scores = net(states.inputs)
    where = states.inputs.masked & states.correct.any(1, keepdim=True)
    p = torch.sigmoid(scores[where])
    y = states.correct[where].float()
    bce = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    assert abs((both - listwise_only).item() - 2.0 * bce.item()) < 1e-4


@pytest.mark.numerics
def test_any_correct_gradient_moves_mass_onto_right_positions():
    mdm = ChainDenoiser(seq_len=5)
    states = chain_states(mdm, 8)
    torch.manual_seed(0)
    net = PolicyNet(PolicyConfig(feature_dim=mdm.feature_dim, width=16, n_heads=2, mlp_hidden=16))
    cfg = PretrainConfig(target="correct")

    def right_mass() -> float:
        with torch.no_grad():
            logp = net.log_probs(states.inputs)
        on = states.correct.any(1)
        return float(logp.exp().masked_fill(~states.correct, 0).sum(1)[on].mean())

    before = right_mass()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    loss = pretrain_loss(cfg, net, states)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert right_mass() > before


@pytest.mark.numerics
@pytest.mark.parametrize("pointwise_weight", [0.0, 1.0])
def test_correct_pretraining_learns_the_one_right_order_on_the_chain(pointwise_weight):
    mdm = ChainDenoiser(seq_len=6)
    confidence = unmask(mdm, mdm.all_masked(1), make_rule("confidence")).tokens
    assert float(mdm.reward(confidence).mean()) < 1.0  # the rule is lured
    states = chain_states(mdm, 64, seed=1)
    torch.manual_seed(0)
    net = PolicyNet(PolicyConfig(feature_dim=mdm.feature_dim, width=16, n_heads=2, mlp_hidden=32))
    cfg = PretrainConfig(target="correct", pointwise_weight=pointwise_weight)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(150):
        loss = pretrain_loss(cfg, net, states)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    mine, ref = top1_correct(net, chain_states(mdm, 16, seed=2))
    assert mine == 1.0 and ref < 1.0
    greedy = unmask(mdm, mdm.all_masked(1), LearnedPolicy(net, mdm.mask_id, greedy=True)).tokens
    assert float(mdm.reward(greedy).mean()) == 1.0


@pytest.mark.parametrize(
    "fields",
    [
        {"target": "imitate"},
        {"pointwise_weight": -1.0, "target": "correct"},
        {"pointwise_weight": 1.0},
    ],
)
def test_bad_pretrain_settings_are_refused(fields):
    with pytest.raises(ValueError):
        PretrainConfig(**fields).validate()
