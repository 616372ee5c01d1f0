"""GRPO step cost: the batched, feature-caching trainer against the naive way, in one run.

Batched: all prompts x samples decoded together, MDM features cached once per state and reused
for every inner optimisation step. Naive: one trajectory at a time, and the MDM re-run on every
visited state at every inner step to get its features. Both do the same work (same prompts,
group size and inner steps) with the same policy.

Usage: python benchmarks/bench_grpo.py --mdm checkpoints/sudoku9-mdm --data data/sudoku9-train.jsonl
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from upo.models.denoiser import TimedDenoiser
from upo.models.registry import load_mdm
from upo.policies.base import StepState
from upo.policies.learned import LearnedPolicy, PolicyConfig, PolicyNet, inputs_from_state
from upo.rl.grpo import UPOConfig, group_advantages, update
from upo.rl.references import make_reference
from upo.rl.rollout import collect
from upo.tasks.registry import get_task
from upo.tasks.sudoku.io import load_puzzles


def batched_step(mdm, net, batch_tokens, task, batch, cfg, ref):
    opt = torch.optim.AdamW(net.parameters(), lr=0.0)  # lr 0: measure cost, keep the policy fixed
    sampler = LearnedPolicy(net, mdm.mask_id, greedy=False)
    t0 = time.perf_counter()
    traj, states = collect(
        mdm, batch_tokens, sampler, ref.policy, None, torch.Generator().manual_seed(0)
    )
    t_roll = time.perf_counter() - t0
    rewards = torch.from_numpy(task.partial_credit(batch, traj.tokens.numpy())).float()
    adv = group_advantages(rewards, cfg.group_size, False)
    t1 = time.perf_counter()
    update(net, opt, states, adv, ref, cfg, lambda n: None)
    return t_roll, time.perf_counter() - t1, len(batch_tokens)


def naive_step(mdm, net, batch_tokens, task, batch, cfg, ref):
    """One trajectory at a time; every inner step replays each trajectory through the MDM."""
    opt = torch.optim.AdamW(net.parameters(), lr=0.0)
    sampler = LearnedPolicy(net, mdm.mask_id, greedy=False)
    t0 = time.perf_counter()
    trajs = [
        collect(
            mdm,
            batch_tokens[i : i + 1],
            sampler,
            ref.policy,
            None,
            torch.Generator().manual_seed(i),
        )[0]
        for i in range(len(batch_tokens))
    ]
    t_roll = time.perf_counter() - t0
    outputs = torch.cat([t.tokens for t in trajs]).numpy()
    adv = group_advantages(
        torch.from_numpy(task.partial_credit(batch, outputs)).float(), cfg.group_size, False
    )
    t1 = time.perf_counter()
    for _ in range(cfg.inner_steps):
        opt.zero_grad()
        for i, traj in enumerate(trajs):
            tokens = batch_tokens[i : i + 1].clone()
            for s, pos in enumerate(traj.positions[0].tolist()):
                with torch.no_grad():
                    logits, feats = mdm.forward(tokens, torch.ones_like(tokens, dtype=torch.bool))
                masked = tokens == mdm.mask_id
                state = StepState(tokens, logits, feats, masked, masked, torch.ones_like(masked), s)
                inp = inputs_from_state(state, mdm.mask_id, None)
                logp = net.log_probs(inp, cfg.temperature)[0, pos]
                (-logp * adv[i] / len(trajs)).backward()
                tokens[0, pos] = traj.tokens[0, pos]
        opt.step()
    return t_roll, time.perf_counter() - t1, len(batch_tokens)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mdm", default="checkpoints/sudoku9-mdm")
    ap.add_argument("--data", required=True)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--inner-steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="runs per method; the median is shown")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task = get_task("sudoku9")
    data = load_puzzles(args.data, task.spec)
    idx = np.repeat(np.arange(args.prompts), args.group_size)
    batch = task.batch(data.puzzles[idx], data.solutions[idx])
    tokens = torch.from_numpy(batch.tokens)
    cfg = UPOConfig(pretrained="-", group_size=args.group_size, inner_steps=args.inner_steps)
    ref = make_reference("softmax:0.05")
    # Warm-up, untimed: the first calls at a new batch shape pay one-off set-up costs (kernel
    # selection, allocator growth) that would otherwise be charged to whichever method runs first.
    mdm = load_mdm(args.mdm)
    net = PolicyNet(PolicyConfig(feature_dim=mdm.feature_dim))
    warm = UPOConfig(pretrained="-", group_size=args.group_size, inner_steps=1)
    batched_step(mdm, net, tokens, task, batch, warm, ref)
    naive_step(
        mdm,
        net,
        tokens[:1],
        task,
        task.batch(data.puzzles[:1], data.solutions[:1]),
        UPOConfig(pretrained="-", group_size=1, inner_steps=1),
        ref,
    )
    rows = []
    for name, fn in (("batched + cached features", batched_step), ("naive", naive_step)):
        runs = []
        # the median of several runs is reported: this machine is noisy
        for _ in range(args.repeats):
            mdm = TimedDenoiser(load_mdm(args.mdm))
            net = PolicyNet(PolicyConfig(feature_dim=mdm.feature_dim))
            t = time.perf_counter()
            t_roll, t_upd, n = fn(mdm, net, tokens, task, batch, cfg, ref)
            total = time.perf_counter() - t
            runs.append((name, total, t_roll, t_upd, n, mdm.rows, mdm.seconds))
        rows.append(sorted(runs, key=lambda r: r[1])[len(runs) // 2])
    print(
        f"{args.prompts} prompts x {args.group_size} samples, {args.inner_steps} inner steps, "
        f"{args.threads} threads, median of {args.repeats} runs\n"
    )
    print(
        "| method | step s | rollout s | update s | trajectories/s (rollout) | MDM forwards/s | MDM share of step |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, total, t_roll, t_upd, n, rows_, mdm_s in rows:
        print(
            f"| {name} | {total:.1f} | {t_roll:.1f} | {t_upd:.1f} | {n / t_roll:.2f} | {rows_ / mdm_s:.0f} | {100 * mdm_s / total:.0f}% |"
        )
    print(f"\nnaive / batched step time: {rows[1][1] / rows[0][1]:.1f}x")


if __name__ == "__main__":
    main()
