"""The accuracy-vs-NFE frontier: solve rate and cell accuracy against mean MDM calls per item for
every parallel decoding rule, and for learned policies given by path.

Families (one curve each on the plot):
  confidence, k = 1..4   the k most confident positions per step
  threshold:P            every position above P, at least the most confident one (Fast-dLLM)
  eb:GAMMA               the most confident positions while their summed entropy stays <= GAMMA
                         (EB-Sampler style)
  learned                policy checkpoints (--policies), each its own point

Usage:
  python scripts/frontier.py --task sudoku9 --mdm checkpoints/sudoku9-mdm \
      --data data/sudoku9-val.jsonl --out docs/results/frontier/sudoku9-val
writes OUT.json (every point), OUT.md (the table) and OUT.png (solve rate vs NFE).
Items/s is wall-clock on the machine it runs on (a benchmark, not a result: see
benchmarks/parallel.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from upo.evaluate import evaluate_policy
from upo.io_utils import atomic_write_text, read_json, write_json
from upo.models.registry import load_mdm
from upo.plots import solve_rate_vs_nfe
from upo.policies.resolve import resolve_policy
from upo.tasks.registry import get_task

FIXED_K = [1, 2, 3, 4]
THRESHOLDS = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]
ENTROPY_BOUNDS = [0.01, 0.03, 0.1, 0.3, 1.0]


def settings(extra_policies: list[str]) -> list[tuple[str, str, int]]:
    """(family, policy name, k) of every point."""
    points = [("confidence, k per step", "confidence", k) for k in FIXED_K]
    points += [("threshold:P", f"threshold:{p:g}", 1) for p in THRESHOLDS]
    points += [("eb:GAMMA", f"eb:{g:g}", 1) for g in ENTROPY_BOUNDS]
    points += [("learned", name, 1) for name in extra_policies]
    return points


def label(policy: str, k: int) -> str:
    if policy == "confidence":
        return f"k={k}"
    if ":" in policy and not Path(policy).exists():
        return policy.split(":", 1)[1]
    return Path(policy).name


# the rule families are curves; learned policies are single points
JOIN = {"confidence, k per step", "threshold:P", "eb:GAMMA"}


def replot(out: Path) -> None:
    """OUT.png again from OUT.json (no decoding)."""
    data = read_json(out.with_suffix(".json"))
    what = f"{data['task']}, {data['n']} items of {data['data']}"
    solve_rate_vs_nfe(
        data["points"], out.with_suffix(".png"), f"{what}, MDM {data['mdm']}", join=JOIN
    )


def table(points: list[dict]) -> str:
    lines = [
        "| family | setting | solve rate | 95% CI | cell acc | NFE | items/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in points:
        lo, hi = p["solve_ci95"]
        lines.append(
            f"| {p['family']} | {p['label']} | {100 * p['solve_rate']:.1f}% | "
            f"[{100 * lo:.1f}, {100 * hi:.1f}] | {100 * p['cell_acc']:.1f}% | {p['nfe']:.1f} | "
            f"{p['items_per_s']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="sudoku9")
    ap.add_argument("--mdm", default="checkpoints/sudoku9-mdm")
    ap.add_argument("--data", default="data/sudoku9-val.jsonl")
    ap.add_argument("--n", type=int, help="the first N items (default: all)")
    ap.add_argument("--policies", default="", help="learned policy checkpoints, comma-separated")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", required=True, help="OUT.json, OUT.md and OUT.png are written")
    ap.add_argument("--replot", action="store_true", help="only redraw OUT.png from OUT.json")
    args = ap.parse_args()
    if args.replot:
        replot(Path(args.out))
        return 0
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    mdm = load_mdm(args.mdm, options={"dtype": args.dtype})
    batch = task.bind(mdm).load(args.data)
    if args.n:
        batch = batch.select(np.arange(min(args.n, len(batch))))
    extra = [p for p in args.policies.split(",") if p]
    points = []
    start = time.perf_counter()
    plan = settings(extra)
    bar = tqdm(total=len(batch) * len(plan), desc="frontier", unit="item", file=sys.stderr)
    for family, name, k in plan:
        policy = resolve_policy(name, mdm)
        bar.set_postfix_str(f"{name} k={k}")
        r = evaluate_policy(mdm, task, batch, policy, args.batch_size, k=k, progress=bar.update)
        points.append(
            {
                "family": family,
                "policy": name,
                "k": k,
                "label": label(name, k),
                "solve_rate": r.solve_rate,
                "solve_ci95": list(r.solve_ci95),
                "cell_acc": r.partial_credit,
                "nfe": r.nfe,
                "items_per_s": r.items_per_s,
                "seconds": r.seconds,
            }
        )
    bar.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    blanks = task.difficulty(batch)
    what = f"{args.task}, {len(batch)} items of {args.data}"
    if len(set(blanks.tolist())) == 1:
        what += f" ({int(blanks[0])} {task.difficulty_name})"
    command = "python scripts/frontier.py " + " ".join(sys.argv[1:])
    write_json(
        out.with_suffix(".json"),
        {
            "task": args.task,
            "data": args.data,
            "n": len(batch),
            "mdm": args.mdm,
            "dtype": mdm.dtype_used,
            "command": command,
            "points": points,
        },
    )
    atomic_write_text(
        out.with_suffix(".md"),
        f"# Accuracy vs MDM calls: {what}\n\nMDM `{args.mdm}` in {mdm.dtype_used}. Command:\n\n"
        f"    {command}\n\n{table(points)}\n",
    )
    solve_rate_vs_nfe(points, out.with_suffix(".png"), f"{what}, MDM {args.mdm}", join=JOIN)
    print(table(points))
    print(f"wrote {out}.json/.md/.png in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
