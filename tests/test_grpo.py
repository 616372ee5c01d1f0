"""Behaviour of the UPO update: trajectory log-probs, the clipped ratio, both regularisers, a tiny
end-to-end run on a task with one right order, and replica consistency across processes."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from toy_denoiser import ChainDenoiser
from upo.config import load_config, to_dict
from upo.decode import unmask
from upo.errors import UpoError
from upo.policies.learned import LearnedPolicy, PolicyConfig, PolicyNet
from upo.policies.rules import make_rule
from upo.rl.grpo import (
    UPOConfig,
    group_advantages,
    per_item_sum,
    train_upo,
    trajectory_chunks,
    update,
)
from upo.rl.grpo_config import LOSS_OPTION_DEFAULTS
from upo.rl.references import make_reference
from upo.rl.rollout import collect
from upo.training.distributed import Distributed

ALL_REFERENCES = [
    "confidence",
    "margin",
    "entropy",
    "softmax:0.5",
    "softmax-vocab:0.05",
    "topk:3",
    "none",
]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_net(
    feature_dim: int, seed: int = 0, restrict_topk: int | None = None, spread: float = 1.0
):
    """A small random policy; `spread` scales the score layer so the distribution is far from
    uniform (the default init gives nearly flat scores)."""
    torch.manual_seed(seed)
    cfg = PolicyConfig(
        feature_dim=feature_dim, width=16, n_heads=2, mlp_hidden=16, restrict_topk=restrict_topk
    )
    net = PolicyNet(cfg)
    with torch.no_grad():
        net.mlp[-1].weight.mul_(spread)
    return net


def make_cfg(reference: str = "none", **kw) -> UPOConfig:
    base = dict(init="random", reference=reference, beta=0.0, group_size=2, inner_steps=2)
    base.update(kw)
    cfg = UPOConfig(**base)
    cfg.validate()
    return cfg


def no_sync(net) -> None:
    pass


def rollout(mdm, tokens, net, temperature=1.0, reference="none", seed=0, keep_ref_dist=False):
    ref = make_reference(reference)
    sampler = LearnedPolicy(net, mdm.mask_id, temperature=temperature, greedy=False)
    traj, states = collect(
        mdm, tokens, sampler, ref.policy, ref.restrict_topk, seeded(seed), keep_ref_dist
    )
    return ref, traj, states


def gathered(logp: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return logp.gather(1, index[:, None]).squeeze(1)


def flat_grads(net) -> torch.Tensor:
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]
    return torch.cat([g.reshape(-1) for g in grads])


# --- 1. trajectory log-probability --------------------------------------------------------------


def test_trajectory_logprob_is_sum_of_step_logprobs(mdm4, puzzles4):
    puzzles, _ = puzzles4
    tokens = puzzles.repeat(3, 1)
    net = make_net(mdm4.feature_dim, spread=8.0)
    temperature = 0.6
    _, traj, states = rollout(mdm4, tokens, net, temperature=temperature)
    n = len(tokens)
    blanks = (tokens == mdm4.mask_id).sum(1)

    # every blank of every item is one recorded state, and the actions are the trajectory's
    assert torch.equal(per_item_sum(torch.ones(len(states)), states.item, n), blanks.float())
    assert torch.equal(traj.positions[states.item, states.step], states.action)

    with torch.no_grad():
        step_logp = gathered(net.log_probs(states.inputs, temperature), states.action)
        at_one = gathered(net.log_probs(states.inputs, 1.0), states.action)
    recomputed = per_item_sum(step_logp, states.item, n)
    assert torch.allclose(recomputed, traj.logprob, atol=1e-3)
    assert torch.allclose(step_logp, states.sample_logp, atol=1e-4)
    assert torch.allclose(per_item_sum(states.sample_logp, states.item, n), traj.logprob, atol=1e-4)
    # the temperature is part of the log-prob: the untempered policy gives something else
    assert (per_item_sum(at_one, states.item, n) - traj.logprob).abs().max() > 0.1


# --- 2. the ratio at the first inner step --------------------------------------------------------


def test_ratio_is_one_at_first_inner_step(mdm4, puzzles4):
    puzzles, _ = puzzles4
    tokens = puzzles[:4].repeat_interleave(2, 0)
    temperature = 0.7
    net = make_net(mdm4.feature_dim, spread=4.0)
    _, _, states = rollout(mdm4, tokens, net, temperature=temperature)
    cfg = make_cfg(temperature=temperature, inner_steps=2, chunk_states=5)
    adv = group_advantages(torch.rand(len(tokens), generator=seeded(1)), 2, False)

    calls = []
    original = net.log_probs

    def spy(inp, temp=1.0):
        out = original(inp, temp)
        calls.append((torch.is_grad_enabled(), temp, out.detach().clone()))
        return out

    net.log_probs = spy
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    stats = update(net, opt, states, adv, make_reference("none"), cfg, no_sync)
    assert stats.ratio_first == 1.0

    assert all(temp == temperature for _, temp, _ in calls)
    # log g_old comes from the first inner step's own pass: no extra pass. The update walks the
    # states item-major, in chunks of whole trajectories.
    order = torch.argsort(states.item, stable=True)
    n_chunks = len(trajectory_chunks(states.item[order], len(tokens), cfg.chunk_states))
    assert len(calls) == n_chunks * cfg.inner_steps
    assert all(g for g, _, _ in calls)
    per_call = [c[2] for c in calls]
    first = gathered(torch.cat(per_call[:n_chunks]), states.action[order])
    second = gathered(torch.cat(per_call[n_chunks:]), states.action[order])
    # g_old is the distribution the rollout sampled from (up to the bf16 feature cache)
    assert torch.allclose(first, states.sample_logp[order], atol=1e-4)
    # after one optimiser step the ratio has moved away from 1
    assert (torch.exp(second - first) - 1).abs().max() > 1e-3


def test_kl_reference_takes_one_pass_per_inner_step(mdm4, puzzles4):
    puzzles, _ = puzzles4
    tokens = puzzles[:4].repeat_interleave(2, 0)
    net = make_net(mdm4.feature_dim, spread=4.0)
    ref, _, states = rollout(mdm4, tokens, net, reference="softmax:0.5")
    cfg = make_cfg("softmax:0.5", beta=0.1, inner_steps=3, chunk_states=25)
    adv = group_advantages(torch.rand(len(tokens), generator=seeded(1)), 2, False)
    calls = []
    original = net.log_probs

    def spy(inp, temp=1.0):
        out = original(inp, temp)
        calls.append(torch.is_grad_enabled())
        return out

    net.log_probs = spy
    stats = update(net, torch.optim.SGD(net.parameters(), lr=0.1), states, adv, ref, cfg, no_sync)
    # Chunks hold whole trajectories, so the KL estimator's trajectory sums come from the loss
    # pass itself: no separate g_old pass and no extra no-grad pass per inner step.
    order = torch.argsort(states.item, stable=True)
    n = len(trajectory_chunks(states.item[order], len(tokens), cfg.chunk_states))
    assert 1 < n < len(tokens)  # several trajectories per chunk, several chunks
    assert calls == [True] * n * cfg.inner_steps
    assert stats.ratio_first == 1.0


@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_kl_update_equals_whole_batch_loss(mdm4, puzzles4, aggregation):
    """The chunked KL update takes the same optimiser step as one pass over all states that
    computes the trajectory log-probs first and then the loss of the docstring's estimator, its
    per-step score terms weighted like the policy gradient's."""
    puzzles, _ = puzzles4
    tokens = puzzles[:4].repeat_interleave(2, 0)
    net = make_net(mdm4.feature_dim, spread=4.0)
    net.bf16 = False  # float32 throughout, so chunked and whole-batch sums agree to rounding
    ref, _, states = rollout(mdm4, tokens, net, reference="softmax:0.5")
    cfg = make_cfg(
        "softmax:0.5",
        beta=0.3,
        inner_steps=2,
        chunk_states=25,
        grad_clip=1e9,
        step_aggregation=aggregation,
    )
    adv = group_advantages(torch.rand(len(tokens), generator=seeded(1)), 2, False)
    twin = copy.deepcopy(net)
    update(net, torch.optim.SGD(net.parameters(), lr=0.1), states, adv, ref, cfg, no_sync)

    n = len(tokens)
    length = per_item_sum(torch.ones(len(states)), states.item, n)[states.item]
    weight = 1.0 / (length * n) if aggregation == "mean" else torch.full((len(states),), 1.0 / n)
    ref_traj = per_item_sum(states.ref_logp, states.item, n)
    opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    old = None
    for _ in range(cfg.inner_steps):
        opt.zero_grad()
        new = gathered(twin.log_probs(states.inputs, cfg.temperature), states.action)
        old = new.detach() if old is None else old
        ratio = torch.exp(new - old)
        a = adv[states.item]
        surrogate = torch.min(ratio * a, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * a)
        new_traj = per_item_sum(new.detach(), states.item, n)
        w = torch.exp(new_traj - per_item_sum(old, states.item, n)).clamp(0.5, 2.0)
        coef = w * (1 + new_traj - ref_traj)
        kl = (coef[states.item] * new * weight).sum()
        loss = -(surrogate * weight).sum() + cfg.beta * kl
        loss.backward()
        opt.step()
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), (p - q).abs().max()


# --- 3. the cross-entropy regulariser -------------------------------------------------------------


@pytest.mark.numerics
def test_ce_regulariser_pushes_towards_reference_choice(mdm4, puzzles4):
    puzzles, _ = puzzles4
    tokens = puzzles.repeat_interleave(2, 0)
    net = make_net(mdm4.feature_dim, spread=4.0)
    ref, _, states = rollout(mdm4, tokens, net, reference="confidence")
    assert states.inputs.allowed.gather(1, states.ref_choice[:, None]).all()
    with torch.no_grad():
        before = gathered(net.log_probs(states.inputs), states.ref_choice)

    cfg = make_cfg("confidence", beta=1.0, inner_steps=1, grad_clip=1e9)
    adv = torch.zeros(len(tokens))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    stats = update(net, opt, states, adv, ref, cfg, no_sync)
    with torch.no_grad():
        after = gathered(net.log_probs(states.inputs), states.ref_choice)
    assert after.mean() > before.mean() + 1e-3
    assert (after > before).float().mean() > 0.7

    # the reported regulariser is the CE to the reference, averaged over steps, then items
    n = len(tokens)
    steps = per_item_sum(torch.ones(len(states)), states.item, n)
    expected = float((per_item_sum(-before, states.item, n) / steps).mean())
    assert stats.reg == pytest.approx(expected, rel=1e-3)
    # with no advantage, the loss is the regulariser alone
    assert stats.loss == pytest.approx(cfg.beta * expected, rel=1e-3)


def test_without_advantage_or_regulariser_nothing_moves(mdm4, puzzles4):
    puzzles, _ = puzzles4
    tokens = puzzles[:2].repeat_interleave(2, 0)
    net = make_net(mdm4.feature_dim, spread=4.0)
    ref, _, states = rollout(mdm4, tokens, net, reference="confidence")
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    update(net, opt, states, torch.zeros(len(tokens)), ref, make_cfg("confidence"), no_sync)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize("reference", ["confidence", "softmax:0.5", "topk:3"])
def test_mean_aggregation_is_the_sum_over_the_trajectory_length(mdm4, puzzles4, reference):
    """Trajectories of one length L: the "mean" loss is the "sum" loss / L, term by term, so beta
    weighs the regulariser (CE or KL) against the policy gradient the same way under both."""
    puzzles, _ = puzzles4
    tokens = puzzles[:1].repeat(6, 1)  # one puzzle: every trajectory has its blank count
    length = int((puzzles[0] == mdm4.mask_id).sum())
    ref = make_reference(reference)
    net = make_net(mdm4.feature_dim, restrict_topk=ref.restrict_topk, spread=4.0)
    net.bf16 = False  # float32 throughout: the two sums agree to rounding
    _, _, states = rollout(mdm4, tokens, net, reference=reference)
    assert ref.regulariser in ("ce", "kl") and length > 2
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.3, 0.9, 0.5, 0.2]), 2, False)

    def gradient(aggregation: str, beta: float) -> torch.Tensor:
        cfg = make_cfg(
            reference, beta=beta, inner_steps=1, grad_clip=1e9, step_aggregation=aggregation
        )
        captured = []
        twin = copy.deepcopy(net)
        opt = torch.optim.SGD(twin.parameters(), lr=0.0)
        update(twin, opt, states, adv, ref, cfg, lambda m: captured.append(flat_grads(m)))
        return captured[0]

    beta = 0.5
    summed, mean = gradient("sum", beta), gradient("mean", beta)
    assert float((mean * length - summed).norm()) < 1e-5 * float(summed.norm())
    # both terms are really there: the regulariser alone is a sizeable part of the gradient
    reg_only = gradient("sum", beta) - gradient("sum", 0.0)
    assert float(reg_only.norm()) > 0.05 * float(summed.norm())


# --- 4. the KL estimator -------------------------------------------------------------------------


def test_kl_estimator_is_zero_mean_when_policy_is_the_topk_reference(mdm4, puzzles4):
    k = 3
    puzzles, _ = puzzles4
    tokens = puzzles.repeat(32, 1)  # 256 trajectories
    net = make_net(mdm4.feature_dim, restrict_topk=k)
    with torch.no_grad():  # constant scores: uniform over the K most confident candidates
        net.mlp[-1].weight.zero_()
        net.mlp[-1].bias.zero_()
    ref, _, states = rollout(mdm4, tokens, net, reference=f"topk:{k}", seed=3)
    assert ref.regulariser == "kl" and ref.restrict_topk == k
    assert torch.allclose(states.sample_logp, states.ref_logp)

    captured = []
    cfg = make_cfg(f"topk:{k}", beta=1.0, inner_steps=1, group_size=8)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)

    def capture(m) -> None:
        captured.append(flat_grads(m))

    stats = update(net, opt, states, torch.zeros(len(tokens)), ref, cfg, capture)
    assert stats.reg == 0.0  # KL(g_old || g_ref) estimate: log g(tau) - log g_ref(tau) is 0
    mean_grad = captured[0]

    # a single trajectory's score-function gradient, for scale
    singles = []
    for item in range(8):
        net.zero_grad()
        s = states.take((states.item == item).nonzero().squeeze(1))
        gathered(net.log_probs(s.inputs), s.action).sum().backward()
        singles.append(float(flat_grads(net).norm()))
    single = sum(singles) / len(singles)
    assert single > 1e-3
    # averaged over 256 trajectories: ~1/sqrt(256) of one, if the estimator is zero-mean
    assert float(mean_grad.norm()) < 0.2 * single


@pytest.mark.numerics
def test_kl_regulariser_moves_policy_towards_softmax_reference(mdm4, puzzles4):
    """With the reward switched off (zero advantages), the KL term alone pulls the policy towards
    softmax(confidence / 0.2). Measured exactly (no sampling) on one fixed set of states, and
    asserted with a wide margin: the sampled trajectories that drive the updates depend on float
    rounding, which differs between CPU kernel sets (AVX2, AVX512, ATEN_CPU_CAPABILITY=default),
    so a threshold only just met on one machine fails on another."""
    puzzles, _ = puzzles4
    tokens = puzzles.repeat(8, 1)
    net = make_net(mdm4.feature_dim, spread=8.0)
    ref = make_reference("softmax:0.2")
    sampler = LearnedPolicy(net, mdm4.mask_id, greedy=False)
    gen = seeded(0)
    cfg = make_cfg(ref.name, beta=1.0, inner_steps=2, group_size=8)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.0)
    _, held = collect(mdm4, tokens, sampler, ref.policy, None, seeded(1), keep_ref_dist=True)

    def state_kl() -> float:
        """Exact mean KL(g || g_ref) over the held states."""
        with torch.no_grad():
            logp = net.log_probs(held.inputs)
        diff = (logp - held.ref_dist).masked_fill(~held.inputs.allowed, 0.0)
        return float((logp.exp() * diff).sum(1).mean())

    before = state_kl()
    regs = []
    for _ in range(8):
        _, states = collect(mdm4, tokens, sampler, ref.policy, None, gen)
        regs.append(update(net, opt, states, torch.zeros(len(tokens)), ref, cfg, no_sync).reg)
    after = state_kl()
    assert regs[0] > 0  # the trajectory KL estimate of a policy unlike the reference
    assert after < 0.5 * before, (before, after)


# --- 5. end to end ------------------------------------------------------------------------------


def test_toy_chain_denoiser_rewards_left_to_right():
    """The toy task itself: left-to-right is perfect, max-confidence is lured, random is between."""
    mdm = ChainDenoiser(seq_len=6)
    tokens = mdm.all_masked(64)

    def reward(rule):
        traj = unmask(mdm, tokens, make_rule(rule), generator=seeded(0))
        return float(mdm.reward(traj.tokens).mean())

    assert reward("left-to-right") == 1.0
    assert reward("confidence") <= 0.5
    assert 0.45 < reward("random") < 0.7


@pytest.mark.numerics
def test_upo_raises_reward_on_toy_task():
    torch.manual_seed(0)
    mdm = ChainDenoiser(seq_len=6)
    group, prompts = 8, 4
    net = PolicyNet(PolicyConfig(feature_dim=mdm.feature_dim, width=16, n_heads=2, mlp_hidden=32))
    cfg = make_cfg("none", group_size=group, inner_steps=2, temperature=1.0, lr=2e-3)
    ref = make_reference(cfg.reference)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    sampler = LearnedPolicy(net, mdm.mask_id, temperature=1.0, greedy=False)
    gen = seeded(0)

    def sampled_reward() -> float:
        traj, _ = collect(mdm, mdm.all_masked(256), sampler, None, None, gen)
        return float(mdm.reward(traj.tokens).mean())

    initial = sampled_reward()
    for _ in range(60):
        traj, states = collect(mdm, mdm.all_masked(group * prompts), sampler, None, None, gen)
        adv = group_advantages(mdm.reward(traj.tokens), group, False)
        stats = update(net, opt, states, adv, ref, cfg, no_sync)
        assert math.isfinite(stats.loss)
    final = sampled_reward()
    greedy = LearnedPolicy(net, mdm.mask_id, greedy=True)
    greedy_reward = float(mdm.reward(unmask(mdm, mdm.all_masked(1), greedy).tokens).mean())
    assert initial < 0.65
    assert final > 0.9
    assert greedy_reward > 0.9  # 5/6 is the trap: one wrong position


# --- 6. every reference kind, with and without regularisation -----------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.1])
@pytest.mark.parametrize("reference", ALL_REFERENCES)
def test_update_runs_with_every_reference(mdm4, puzzles4, reference, beta):
    puzzles, _ = puzzles4
    tokens = puzzles[:3].repeat_interleave(2, 0)
    ref = make_reference(reference)
    net = make_net(mdm4.feature_dim, restrict_topk=ref.restrict_topk, spread=4.0)
    _, _, states = rollout(mdm4, tokens, net, reference=reference)
    cfg = make_cfg(reference, beta=beta)
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.2, 0.7, 0.5, 0.5]), 2, False)
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    stats = update(net, opt, states, adv, ref, cfg, no_sync)
    values = dataclasses.asdict(stats)
    assert all(math.isfinite(v) for v in values.values()), values
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    if beta == 0.0 or ref.regulariser == "none":
        # ratio 1 and group-centred advantages: the first step's surrogate loss is zero
        assert stats.loss == pytest.approx(0.0, abs=1e-6)
    elif ref.regulariser == "ce":
        assert stats.loss == pytest.approx(beta * stats.reg, rel=1e-3)


def test_group_advantages():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.2, 0.4])
    adv = group_advantages(rewards, 2, False)
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, 0.0, 0.0, -0.1, 0.1]))
    scaled = group_advantages(rewards, 2, True)
    assert torch.allclose(scaled[:2], torch.tensor([0.5, -0.5]) / math.sqrt(0.5), rtol=1e-4)
    assert torch.equal(scaled[2:4], torch.zeros(2))  # no variance, no signal (and no NaN)


def test_single_process_distributed_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    dist = Distributed()
    assert dist.main and dist.world == 1
    net = make_net(8)
    assert dist.checksums(net) == [sum(float(p.double().sum()) for p in net.parameters())]
    assert dist.mean(0.25) == 0.25


# --- 8. two processes ----------------------------------------------------------------------------


def write_sudoku4_setup(root: Path) -> Path:
    from upo.checkpoint import save_checkpoint
    from upo.models.tiny import TinyConfig, TinyMDM
    from upo.tasks.sudoku.generate import generate_puzzles
    from upo.tasks.sudoku.grid import SPECS

    cfg = TinyConfig(
        vocab_size=5, mask_id=0, seq_len=16, d_model=32, n_layers=2, n_heads=2, grid_box=[2, 2]
    )
    torch.manual_seed(0)
    model = TinyMDM(cfg)
    mdm_dir = root / "mdm"
    save_checkpoint(
        mdm_dir,
        model,
        {"kind": "tiny", "task": "sudoku4", "model": dataclasses.asdict(cfg)},
        {"kind": "mdm"},
    )
    rows = [
        {"puzzle": "".join(map(str, p)), "solution": "".join(map(str, s))}
        for p, s in generate_puzzles(SPECS["sudoku4"], 12, (6, 9), seed=0)
    ]
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "task": "sudoku4",
        "mdm": str(mdm_dir),
        "train_data": str(train),
        "val_data": None,
        "policy": {"width": 16, "n_heads": 2, "mlp_hidden": 16},
        "init": "random",
        "reference": "confidence",
        "beta": 0.01,
        "steps": 2,
        "prompts_per_step": 4,
        "group_size": 2,
        "inner_steps": 2,
        "threads": 1,
        "checkpoint_every": 1,
        "warmup_steps": 1,
    }
    path = root / "upo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


EXIT_ABORT = "terminate called without an active exception"


def free_port() -> int:
    """A free local port, so concurrent runs do not collide on torchrun's default 29500."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_training_keeps_replicas_identical(tmp_path):
    config = write_sudoku4_setup(tmp_path)
    out = tmp_path / "policy"
    accelerate = Path(sys.executable).parent / "accelerate"
    # `--multi_gpu` is accelerate's torchrun launcher, which runs fine on CPU (train_upo uses gloo).
    # `--cpu --num_processes 2` would silently start ONE process: accelerate's CPU launcher only
    # starts several through mpirun (--mpirun_hostfile).
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        "-m", "upo.cli", "policy", "train", "--config", str(config), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path
    )
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if result.returncode != 0 and EXIT_ABORT in result.stderr and meta.get("complete"):
        # Known defect: the gloo process group is never destroyed, so a process sometimes
        # aborts at interpreter exit after a complete run (a few % of runs).
        warnings.warn(
            f"UPO run completed but a process aborted at exit: {EXIT_ABORT}", stacklevel=1
        )
    else:
        assert result.returncode == 0, result.stderr[-4000:]
    assert meta["complete"] and meta["steps"] == 2
    sums = meta["replica_checksums"]
    assert len(sums) == 2
    assert sums[0] == sums[1]
    assert meta["replicas_identical"] is True
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]


@pytest.mark.parametrize("size", [1, 3, 7, 50])
def test_trajectory_chunks_hold_whole_trajectories(size):
    g = seeded(size)
    counts = torch.randint(0, 9, (12,), generator=g)
    item = torch.repeat_interleave(torch.arange(12), counts)
    bounds = trajectory_chunks(item, 12, size)
    # the slices tile the states in order, without gaps or empty chunks
    assert bounds[0].start == 0 and bounds[-1].stop == len(item)
    assert all(a.stop == b.start for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(s.stop > s.start for s in bounds)
    for s in bounds:
        inside = set(item[s].tolist())
        # no trajectory is split across chunks
        assert all(int((item == i).sum()) == int((item[s] == i).sum()) for i in inside)
        # at most `size` states, unless the chunk is one trajectory longer than that
        assert s.stop - s.start <= size or len(inside) == 1


# --- 9. budgets: rollout rounds and optimiser steps ----------------------------------------------


def test_max_steps_counts_optimiser_steps_as_trl_does():
    cfg = make_cfg(max_steps=3500, inner_steps=16)
    assert cfg.rollout_rounds == 219  # ceil(3500 / 16)
    per_round = [cfg.inner_steps_in(r) for r in range(cfg.rollout_rounds)]
    assert per_round[:-1] == [16] * 218 and per_round[-1] == 3500 - 218 * 16
    assert sum(per_round) == cfg.optimizer_steps == 3500
    # the old budget: rounds, every one of them with inner_steps optimiser steps
    old = make_cfg(steps=7, inner_steps=4)
    assert old.rollout_rounds == 7 and old.optimizer_steps == 28
    default = make_cfg(inner_steps=4)
    assert default.steps is None and default.rollout_rounds == 100


def test_steps_and_max_steps_are_exclusive(tmp_path):
    path = tmp_path / "upo.yaml"
    path.write_text(yaml.safe_dump({"init": "random", "steps": 10, "max_steps": 100}))
    with pytest.raises(UpoError, match="steps .rollout rounds. or max_steps .optimiser steps."):
        load_config(UPOConfig, path)
    with pytest.raises(ValueError, match="not both"):
        make_cfg(steps=0, max_steps=5)
    with pytest.raises(ValueError, match="must be >= 1"):
        make_cfg(max_steps=0)


def test_warm_up_is_in_the_unit_of_the_budget():
    trl = make_cfg(max_steps=10, inner_steps=4, warmup_steps=6, lr=1.0)
    # optimiser steps: the rate rises at every optimiser step, across rounds
    assert [trl.lr_at(0, i) for i in range(4)] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6])
    assert [trl.lr_at(1, i) for i in range(4, 8)] == pytest.approx([5 / 6, 1, 1, 1])
    rounds = make_cfg(steps=10, inner_steps=4, warmup_steps=2, lr=1.0)
    # rollout rounds (as before max_steps existed): constant within a round
    assert [rounds.lr_at(0, i) for i in range(4)] == [0.5] * 4
    assert [rounds.lr_at(1, i) for i in range(4, 8)] == [1.0] * 4


def test_old_configs_record_the_settings_they_always_did(tmp_path):
    """Run directories of earlier versions recorded `steps` (100 when not given) and no
    max_steps; --resume compares with that record, so it must not change."""
    path = tmp_path / "upo.yaml"
    path.write_text(yaml.safe_dump({"init": "random", "inner_steps": 3}))
    cfg = load_config(UPOConfig, path)
    # added since, left out at their defaults
    later = ("max_steps", "nfe_cost", "objective", "rollout_cache", *LOSS_OPTION_DEFAULTS)
    legacy = {k: v for k, v in to_dict(cfg).items() if k not in later}
    assert cfg.run_config() == {**legacy, "steps": 100}
    new = make_cfg(max_steps=30)
    assert new.run_config()["max_steps"] == 30 and new.run_config()["steps"] is None


def test_max_steps_run_logs_both_counts_and_resumes(tmp_path, monkeypatch):
    """A max_steps budget of 5 with inner_steps 2: rounds of 2, 2 and 1 optimiser steps. The run
    dies in its third round and --resume finishes it: warm-up and counts continue right."""
    config = write_sudoku4_setup(tmp_path)
    data = yaml.safe_load(config.read_text())
    del data["steps"]
    data.update(max_steps=5, inner_steps=2, warmup_steps=4, lr=1e-3, prompts_per_step=2)
    config.write_text(yaml.safe_dump(data))
    cfg = load_config(UPOConfig, config)
    out = tmp_path / "policy"
    import upo.rl.grpo as grpo

    real_update, calls = grpo.update, []

    def dies_in_round_three(*args, **kw):
        calls.append(list(args[7]))  # the round's learning rates
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_update(*args, **kw)

    monkeypatch.setattr(grpo, "update", dies_in_round_three)
    with pytest.raises(KeyboardInterrupt):
        train_upo(cfg, out)
    monkeypatch.setattr(grpo, "update", real_update)
    meta = train_upo(cfg, out, resume=True)
    assert calls == [
        pytest.approx([1e-3 / 4, 2e-3 / 4]),
        pytest.approx([3e-3 / 4, 1e-3]),
        pytest.approx([1e-3]),
    ]
    assert meta["complete"] and meta["steps"] == 3 and meta["optimizer_steps"] == 5
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["rollout_round"] for m in metrics] == [m["step"] for m in metrics] == [1, 2, 3]
    assert [m["optimizer_step"] for m in metrics] == [2, 4, 5]
    assert [m["lr"] for m in metrics] == pytest.approx([5e-4, 1e-3, 1e-3])
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["max_steps"] == 5 and saved["steps"] is None


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_policy_trains_in_the_mdm_precision_and_says_so(tmp_path, monkeypatch, dtype):
    """`dtype` (mdm_options) sets the policy network's arithmetic as well as the MDM's: no bf16
    emulation on a CPU without it; meta.json records both."""
    config = write_sudoku4_setup(tmp_path)
    data = yaml.safe_load(config.read_text())
    data.update(steps=1, mdm_options={"dtype": dtype})
    config.write_text(yaml.safe_dump(data))
    import upo.rl.grpo as grpo

    built = []
    real_build = grpo.build_policy
    monkeypatch.setattr(grpo, "build_policy", lambda *a: built.append(real_build(*a)) or built[0])
    meta = train_upo(load_config(UPOConfig, config), tmp_path / "policy")
    assert meta["mdm_dtype"] == meta["policy_dtype"] == dtype
    assert built[0].bf16 is (dtype == "bfloat16")
