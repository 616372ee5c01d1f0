"""How often does each policy's greedy pick fill a wrong digit, on its own decoding path? A
diagnosis for experiments/README.md (section 2.7), run on the validation set, never the test set.

Counts only on-track states (nothing filled wrongly yet): a wrong pick there is the step that
ruins the puzzle. Correctness pre-training reports the same rate on states visited by sampling;
this measures it where it matters, on the path the greedy policy itself takes.

Usage: python experiments/scripts/greedy_path_errors.py MDM_DIR POLICY [POLICY ...] [--n 200] [--threads 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from upo.decode import unmask
from upo.models.registry import load_mdm
from upo.policies.resolve import resolve_policy
from upo.rl.rollout import on_track
from upo.tasks.registry import get_task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mdm")
    ap.add_argument("policies", nargs="+")
    ap.add_argument("--data", default="data/sudoku9-val.jsonl")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task("sudoku9")
    mdm = load_mdm(args.mdm)
    batch = task.load(args.data).select(np.arange(args.n))
    tokens, answers = torch.from_numpy(batch.tokens), torch.from_numpy(batch.answers)
    print(f"{args.data}, first {args.n} puzzles, MDM {args.mdm}")
    print("| policy | on-track steps | wrong picks | per step | solve rate |")
    print("|---|---|---|---|---|")
    for name in args.policies:
        counts = {"states": 0, "wrong": 0}

        def record(rows, state, choice, counts=counts):
            target = answers[rows]
            live = on_track(state, target)
            wrong = (choice.chosen & (state.logits.argmax(-1) != target)).any(1)
            counts["states"] += int(live.sum())
            counts["wrong"] += int((wrong & live).sum())

        out = unmask(mdm, tokens, resolve_policy(name, mdm), on_step=record)
        solved = float(task.solved(batch, out.tokens.numpy()).mean())
        states, wrong = counts["states"], counts["wrong"]
        print(
            f"| {name} | {states} | {wrong} | {100 * wrong / max(states, 1):.2f}% "
            f"| {100 * solved:.1f}% |"
        )


if __name__ == "__main__":
    main()
