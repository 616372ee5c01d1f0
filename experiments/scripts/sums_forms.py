"""Which phrasing each policy's decode commits to on the sums task, and how often each is right.

    python experiments/scripts/sums_forms.py --mdm runs/sums-mdm --data data/sums-val.jsonl \
        [--policies confidence,margin,entropy,random,left-to-right] [--blocks 4,8] [--n 300] \
        [--out FILE.md]

`--blocks B,...` also decodes max-confidence in semi-autoregressive blocks of B answer positions
(rows "confidence, blocks of B").

Three decodes per policy: as `upo eval` runs it (free), and with the phrasing fixed beforehand by
writing the token that follows the first total (a comma: worked; END: short) into the prompt.
For each: solve rate with its 95% interval, the share of items answered short, worked or
malformed, (free decodes) how often a digit of the first number is written before any END (while
no END is revealed the phrasing is still open), and how many wrong answers mix the phrasings. The end-of-text trap costs accuracy where a rule answers short while the worked
phrasing, once chosen, is right more often.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np

from upo.api import load_mdm
from upo.evaluate import decode_in_batches, wilson_interval
from upo.io_utils import atomic_write_text
from upo.policies.resolve import resolve_policy
from upo.tasks.registry import get_task
from upo.tasks.sums.layout import COMMA, END, answer_forms, numbers_of

FIXED = {"free": None, "worked fixed": COMMA, "short fixed": END}


def digit_before_end(spec, outputs, order) -> np.ndarray:
    """[N] bool: a digit of the first number was revealed before any END was."""
    region = slice(spec.answer_start, None)
    ends = outputs[:, region] == END
    first_end = np.where(ends, order[:, region], np.iinfo(order.dtype).max).min(1)
    first_number = order[:, spec.answer_start : spec.answer_start + spec.width]
    return (first_number < first_end[:, None]).any(1)


def mixed_answers(spec, batch, outputs, solved) -> str:
    """'M of W': of the W wrong answers, M start with a number holding a digit of the first
    running total where that digit differs from the total's (the digit was written for the
    worked phrasing, the answer became another)."""
    numbers = numbers_of(spec, batch.tokens)
    first = spec.answer_start
    mixed = 0
    for i in np.flatnonzero(solved == 0):
        written = outputs[i, first : first + spec.width]
        running = [int(c) for c in f"{numbers[i, 0] + numbers[i, 1]:0{spec.width}d}"]
        total = [int(c) for c in f"{numbers[i].sum():0{spec.width}d}"]
        mixed += any(w == r != t for w, r, t in zip(written, running, total))
    return f"{mixed} of {int((solved == 0).sum())}"


def form_rows(mdm, task, batch, runs: list[tuple[str, int | None]]) -> list[str]:
    """The table's rows for each (policy name, block size or None for one block)."""
    spec = task.spec
    rows = []
    for rule, block in runs:
        policy = resolve_policy(rule, mdm)
        name = rule if block is None else f"{rule}, blocks of {block}"
        for fixed, token in FIXED.items():
            posed = batch.select(np.arange(len(batch)))
            if token is not None:
                posed.tokens = posed.tokens.copy()
                posed.tokens[:, spec.answer_start + spec.width] = token
            outputs, order, *_ = decode_in_batches(
                mdm, posed, policy, batch_size=64, block_size=block
            )
            # Whether a digit of the first number was written before any END: while no END is
            # revealed the phrasing is still open.
            early = digit_before_end(spec, outputs, order)
            early_text = f"{early.mean():.1%}" if token is None else "given"
            solved = task.solved(batch, outputs)
            forms = Counter(answer_forms(spec, outputs))
            lo, hi = wilson_interval(solved.sum(), len(solved))
            mixed = mixed_answers(spec, batch, outputs, solved)
            share = {f: forms[f] / len(solved) for f in ("short", "worked", "malformed")}
            rows.append(
                f"| {name} | {fixed} | {solved.mean():.1%} [{lo:.1%}, {hi:.1%}] | "
                f"{share['short']:.1%} | {share['worked']:.1%} | {share['malformed']:.1%} | {early_text} | {mixed} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mdm", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--policies", default="confidence,margin,entropy,random,left-to-right")
    parser.add_argument("--blocks", default="", help="block sizes for max-confidence, e.g. 4,8")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    task = get_task("sums")
    mdm = load_mdm(args.mdm)
    batch = task.load(args.data)
    batch = batch.select(np.arange(min(args.n, len(batch))))
    header = [
        "| policy | phrasing | solve rate [95% CI] | short | worked | malformed "
        "| a first-number digit before any END | wrong, mixing phrasings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    runs = [(name, None) for name in args.policies.split(",")]
    runs += [("confidence", int(b)) for b in args.blocks.split(",") if b]
    rows = form_rows(mdm, task, batch, runs)
    command = "python " + " ".join(sys.argv)
    text = f"`{command}` ({len(batch)} items)\n\n" + "\n".join(header + rows) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
