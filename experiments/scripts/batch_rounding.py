"""Does decoding a puzzle alone give the same order as decoding it in a batch? A check of the
built-in MDM's arithmetic, for docs/results/README.md ("Batch size and bf16 rounding"; validation
set).

Padding cannot leak (tests require batched = one by one on the test models). What remains is
rounding: a CPU's bf16 matrix-multiply kernels may accumulate in a different order for a small
batch than for a large one, and a near-tie between two cells' confidences can then break the other
way. The script decodes the same puzzles with max-confidence at batch sizes 1, 64 and all at once,
with the MDM as shipped (bf16) and with the same checkpoint run in float32, and counts the puzzles
whose order differs from the all-at-once decode.

Usage: python experiments/scripts/batch_rounding.py [--mdm DIR] [--data FILE] [--n 300] [--out FILE]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from upo.decode import unmask
from upo.io_utils import atomic_write_text
from upo.models.registry import load_mdm
from upo.policies.rules import make_rule
from upo.tasks.registry import get_task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mdm", default="checkpoints/sudoku9-mdm")
    ap.add_argument("--data", default="data/sudoku9-val.jsonl")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--out", default=None, help="JSON file for the counts (default: print only)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    task = get_task("sudoku9")
    batch = task.load(args.data).select(np.arange(args.n))
    tokens = torch.from_numpy(batch.tokens)
    rule = make_rule("confidence")
    record = dict(mdm=args.mdm, data=args.data, n=args.n, results={})
    for bf16 in (True, False):
        mdm = load_mdm(args.mdm, options={"dtype": "bfloat16" if bf16 else "float32"})
        by_size = {}
        for size in (args.n, 64, 1):
            parts = [unmask(mdm, tokens[i : i + size], rule) for i in range(0, args.n, size)]
            by_size[size] = (
                torch.cat([p.order for p in parts]),
                torch.cat([p.tokens for p in parts]).numpy(),
            )
        whole_order, _ = by_size[args.n]
        row = {}
        for size, (order, out) in by_size.items():
            row[f"batch {size}"] = dict(
                orders_differing=int((order != whole_order).any(1).sum()),
                solved=int(task.solved(batch, out).sum()),
            )
        name = "bf16 (as shipped)" if bf16 else "float32"
        record["results"][name] = row
        print(name, row, flush=True)
    if args.out:
        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
