"""Evaluate the right-to-left order (least significant answer digit first: the order carries flow)
as a reference row for the addition tables. It is a task-specific oracle order, so it lives here
and not among upo's general hand rules. Writes the same JSON as `upo eval --json`.

It also measures how right-to-left other policies are: the fraction of their steps that reveal
the rightmost still-masked digit (1.0 = exactly right-to-left), written as `rtl_agreement`.

Usage: python scripts/right_to_left.py MDM DATA OUT.json [--policies P1,P2] [--task addition]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from upo.evaluate import evaluate_policy
from upo.io_utils import write_json
from upo.models.registry import load_mdm
from upo.policies.resolve import resolve_policy
from upo.policies.rules import ArgmaxRule, position_order
from upo.tasks.registry import get_task


def rtl_agreement(order: np.ndarray) -> float:
    """order [N, L]: reveal step per position (-1 = given). Fraction of steps whose position is the
    rightmost one still masked at that step."""
    hits, steps = 0, 0
    for row in order:
        masked = np.flatnonzero(row >= 0)
        by_step = masked[np.argsort(row[masked], kind="stable")]
        remaining = set(masked.tolist())
        for pos in by_step.tolist():
            hits += pos == max(remaining)
            steps += 1
            remaining.discard(pos)
    return hits / max(steps, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mdm")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--task", default="addition")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--policies", default="", help="also measure these policies' agreement")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    mdm = load_mdm(args.mdm)
    batch = task.load(args.data)
    rule = ArgmaxRule("right-to-left (oracle order)", lambda state: -position_order(state))
    policies = [rule] + [resolve_policy(n, mdm) for n in args.policies.split(",") if n]
    difficulty = task.difficulty(batch)
    summaries = []
    for policy in policies:
        res = evaluate_policy(mdm, task, batch, policy, batch_size=64)
        summary = res.summary()
        summary[f"solve_rate_by_{task.difficulty_name}"] = {
            str(int(lv)): round(float(res.solved[difficulty == lv].mean()), 4)
            for lv in np.unique(difficulty)
        }
        summary["rtl_agreement"] = round(rtl_agreement(res.order), 4)
        summaries.append(summary)
        print(
            f"{policy.name}: solve {res.solve_rate:.3f}, right-to-left agreement "
            f"{summary['rtl_agreement']:.3f}"
        )
    write_json(
        args.out,
        {
            "task": task.name,
            "n": len(batch),
            "mdm": args.mdm,
            "data": args.data,
            "k": 1,
            "seed": 0,
            "results": summaries,
        },
    )


if __name__ == "__main__":
    main()
