"""Policy-network precision: GRPO steps/s with the policy in float32 against bf16, in one run.

A GRPO step is a rollout (MDM forwards plus one policy forward per state) and `inner_steps`
policy updates on the cached features. The policy runs in its MDM's precision
(`upo.policies.learned.policy_dtype`); this measures what that choice costs or saves for the
policy alone: the MDM runs in float32 in both arms, so only the policy's arithmetic differs.

`--emulate-avx2` reruns the same measurement in a child process with ATEN_CPU_CAPABILITY=avx2
and ONEDNN_MAX_CPU_ISA=AVX2, so that neither torch's own kernels nor oneDNN's matmuls use AVX512
or AMX: on a CPU with native bf16 that plays an AVX2-only CPU, where bf16 is emulated. (With
ATEN_CPU_CAPABILITY alone, oneDNN still does bf16 matmuls on AMX.)

Usage: python benchmarks/bench_policy_dtype.py --data data/sudoku9-train.jsonl [--emulate-avx2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import torch
from bench_grpo import batched_step  # the same GRPO step, timed the same way

from upo.models.registry import load_mdm
from upo.policies.learned import PolicyConfig, PolicyNet
from upo.rl.grpo import UPOConfig
from upo.rl.references import make_reference
from upo.tasks.registry import get_task
from upo.tasks.sudoku.io import load_puzzles


def measure(args) -> list[tuple]:
    torch.set_num_threads(args.threads)
    task = get_task("sudoku9")
    data = load_puzzles(args.data, task.spec)
    idx = np.repeat(np.arange(args.prompts), args.group_size)
    batch = task.batch(data.puzzles[idx], data.solutions[idx])
    tokens = torch.from_numpy(batch.tokens)
    cfg = UPOConfig(pretrained="-", group_size=args.group_size, inner_steps=args.inner_steps)
    ref = make_reference("topk:3")
    mdm = load_mdm(args.mdm, options={"dtype": "float32"})
    policy_cfg = PolicyConfig(feature_dim=mdm.feature_dim, restrict_topk=3)
    rows = []
    for name, bf16 in (("float32", False), ("bfloat16", True)):
        torch.manual_seed(0)
        net = PolicyNet(policy_cfg, bf16=bf16)
        batched_step(mdm, net, tokens, task, batch, cfg, ref)  # warm-up, untimed
        # (rollout s, update s) of one GRPO step, policy fixed (lr 0)
        steps = (
            batched_step(mdm, net, tokens, task, batch, cfg, ref)[:2] for _ in range(args.repeats)
        )
        runs = sorted(steps, key=sum)
        rows.append((name, *runs[len(runs) // 2]))  # the median run: this machine is noisy
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mdm", default="checkpoints/sudoku9-mdm")
    ap.add_argument("--data", required=True)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--inner-steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--emulate-avx2", action="store_true", help="also measure on AVX2 kernels")
    args = ap.parse_args()
    kernels = torch.backends.cpu.get_cpu_capability()
    rows = measure(args)
    print(
        f"{kernels} kernels, {args.prompts} prompts x {args.group_size} samples, "
        f"{args.inner_steps} inner steps, {args.threads} thread(s), median of {args.repeats}\n"
    )
    print("| policy dtype | rollout s | update s | GRPO steps/s | update vs float32 |")
    print("|---|---|---|---|---|")
    base = rows[0][2]
    for name, t_roll, t_upd in rows:
        print(
            f"| {name} | {t_roll:.2f} | {t_upd:.2f} | {1 / (t_roll + t_upd):.3f} | "
            f"{base / t_upd:.2f}x |"
        )
    if args.emulate_avx2 and os.environ.get("ATEN_CPU_CAPABILITY") != "avx2":
        print(flush=True)
        argv = [a for a in sys.argv[1:] if a != "--emulate-avx2"]
        env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
        subprocess.run([sys.executable, __file__, *argv], env=env, check=True)


if __name__ == "__main__":
    main()
