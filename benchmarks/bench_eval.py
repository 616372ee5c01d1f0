"""Batched evaluation against batch size 1 on the same puzzles: speed-up and identical answers.

Usage: python benchmarks/bench_eval.py --mdm checkpoints/sudoku9-mdm --data data/sudoku9-test.jsonl --n 500
Also reports the share of wall time spent inside MDM forward calls.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from upo.evaluate import decode_in_batches
from upo.models.denoiser import TimedDenoiser
from upo.models.registry import load_mdm
from upo.policies.rules import make_rule
from upo.tasks.registry import get_task
from upo.tasks.sudoku.io import load_puzzles


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mdm", default="checkpoints/sudoku9-mdm")
    ap.add_argument("--data", required=True)
    ap.add_argument("--task", default="sudoku9")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policy", default="confidence")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    data = load_puzzles(args.data, task.spec)
    batch = task.batch(data.puzzles[: args.n], data.solutions[: args.n])
    rows = {}
    for bs in (args.batch_size, 1):
        timed = TimedDenoiser(load_mdm(args.mdm))
        t = time.perf_counter()
        out, order, nfe, _ = decode_in_batches(timed, batch, make_rule(args.policy), bs)
        wall = time.perf_counter() - t
        rows[bs] = (out, order, wall, timed.seconds, float(task.solved(batch, out).mean()))
    out_b, ord_b, wall_b = rows[args.batch_size][:3]
    out_1, ord_1, wall_1 = rows[1][:3]
    same = bool(np.array_equal(out_b, out_1) and np.array_equal(ord_b, ord_1))
    print("| batch size | items | wall s | items/s | MDM share | solve rate |")
    print("|---|---|---|---|---|---|")
    for bs, (_, _, wall, mdm_s, solve) in ((args.batch_size, rows[args.batch_size]), (1, rows[1])):
        print(
            f"| {bs} | {len(batch)} | {wall:.1f} | {len(batch) / wall:.1f} | {100 * mdm_s / wall:.0f}% | {100 * solve:.1f}% |"
        )
    print(
        f"\nspeed-up batched/one-by-one: {wall_1 / wall_b:.1f}x; identical answers and orders: {same}"
    )


if __name__ == "__main__":
    main()
