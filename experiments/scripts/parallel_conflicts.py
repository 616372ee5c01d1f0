"""How many of a parallel rule's wrong fills clash with a cell filled in the same step?

A wrong fill "clashes" when another cell of its row, column or box received the same digit in the
same step: the mistake a set policy that sees the board could avoid by filling one of the two.
Usage: python experiments/scripts/parallel_conflicts.py [--policies threshold:0.9,...] [--n 300]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from upo.evaluate import evaluate_policy
from upo.models.registry import load_mdm
from upo.policies.resolve import resolve_policy
from upo.tasks.registry import get_task


def peers(n: int = 9, box: int = 3) -> np.ndarray:
    """[81, 81] bool: cells sharing a row, column or box (a cell is not its own peer)."""
    r, c = np.divmod(np.arange(n * n), n)
    b = (r // box) * box + c // box
    same = (r[:, None] == r) | (c[:, None] == c) | (b[:, None] == b)
    return same & ~np.eye(n * n, dtype=bool)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--policies", default="threshold:0.9,threshold:0.95,checkpoints/sudoku9-parallel"
    )
    ap.add_argument("--data", default="data/sudoku9-val.jsonl")
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(2)
    task = get_task("sudoku9")
    mdm = load_mdm("checkpoints/sudoku9-mdm")
    batch = task.load(args.data)
    batch = batch.select(np.arange(min(args.n, len(batch))))
    near = peers()
    print(
        "| policy | NFE | wrong fills per puzzle | of them clashing in their step | "
        "puzzles failed only by clashes |"
    )
    print("|---|---|---|---|---|")
    for name in args.policies.split(","):
        r = evaluate_policy(mdm, task, batch, resolve_policy(name, mdm))
        out, order = r.outputs, r.order
        blank = batch.tokens == task.mask_id
        wrong = blank & (out != batch.answers)
        same_step = (order[:, :, None] == order[:, None, :]) & (order[:, :, None] >= 0)
        same_digit = out[:, :, None] == out[:, None, :]
        clash = (same_step & same_digit & near[None]).any(2) & wrong
        failed = wrong.any(1)
        only_clash = failed & ~(wrong & ~clash).any(1)
        print(
            f"| {name} | {r.nfe:.1f} | {wrong.sum(1).mean():.2f} | "
            f"{clash.sum() / max(wrong.sum(), 1):.1%} | {only_clash.sum()} of {failed.sum()} |"
        )


if __name__ == "__main__":
    main()
