"""Which phrasing each policy's decode commits to on the sums task, and how often each is right.

    python experiments/scripts/sums_forms.py --mdm runs/sums-mdm --data data/sums-val.jsonl \
        --policies confidence,margin,entropy,random,left-to-right [--n 300] [--out FILE.md]

For every policy: solve rate, the share of items answered short (the total alone), worked (the
running totals) or malformed, and the solve rate within each form. The end-of-text trap shows as
a policy that answers short (an END revealed early) where the worked answer is right more often.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from upo.evaluation import EvalSettings, evaluate
from upo.tasks.sums.layout import answer_forms


def form_table(task_spec, results) -> str:
    lines = [
        "| policy | solve rate | NFE | short | worked | malformed | solved if short | solved if worked |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        forms = np.array(answer_forms(task_spec, r.outputs))
        count = Counter(forms.tolist())
        n = len(forms)

        def within(form: str, forms=forms, solved=r.solved) -> str:
            picked = forms == form
            return f"{solved[picked].mean():.1%}" if picked.any() else "-"

        lo, hi = r.solve_ci95
        lines.append(
            f"| {r.policy} | {r.solve_rate:.1%} [{lo:.1%}, {hi:.1%}] | {r.nfe:.1f} | "
            f"{count['short'] / n:.1%} | {count['worked'] / n:.1%} | {count['malformed'] / n:.1%} | "
            f"{within('short')} | {within('worked')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mdm", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--policies", default="confidence,margin,entropy,random,left-to-right")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    settings = EvalSettings(
        "sums", args.mdm, args.data, args.policies, n=args.n, threads=args.threads
    )
    record, results = evaluate(settings)
    from upo.tasks.registry import get_task

    table = form_table(get_task("sums").spec, results)
    text = f"`{' '.join(__import__('sys').argv)}`\n\n{table}\n"
    print(text)
    if args.out:
        from upo.io_utils import atomic_write_text

        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
