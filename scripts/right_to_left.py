"""Evaluate the right-to-left order (least significant answer digit first: the order carries flow)
as a reference row for the addition tables. It is a task-specific oracle order, so it lives here
and not among upo's general hand rules. Writes the same JSON as `upo eval --json`.

Usage: python scripts/right_to_left.py MDM DATA OUT.json [--task addition]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from upo.evaluate import evaluate_policy
from upo.io_utils import write_json
from upo.models.registry import load_mdm
from upo.policies.rules import ArgmaxRule, position_order
from upo.tasks.registry import get_task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mdm")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--task", default="addition")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    mdm = load_mdm(args.mdm)
    batch = task.load(args.data)
    rule = ArgmaxRule("right-to-left (oracle order)", lambda state: -position_order(state))
    res = evaluate_policy(mdm, task, batch, rule, batch_size=64)
    difficulty = task.difficulty(batch)
    summary = res.summary()
    summary[f"solve_rate_by_{task.difficulty_name}"] = {
        str(int(lv)): round(float(res.solved[difficulty == lv].mean()), 4)
        for lv in np.unique(difficulty)
    }
    write_json(
        args.out,
        {
            "task": task.name,
            "n": len(batch),
            "mdm": args.mdm,
            "data": args.data,
            "k": 1,
            "seed": 0,
            "results": [summary],
        },
    )


if __name__ == "__main__":
    main()
