"""Markdown tables from `upo eval --json` outputs of the addition and Zebra tasks: the overall table
and solve rate against difficulty (digits, clues). Used by scripts/tasks_results.sh.

Usage: python scripts/tasks_tables.py OUT.md TITLE EVAL.json [EVAL.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: str, title: str, paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text()) for p in paths if Path(p).is_file()]
    # One row per policy (first file wins); a later file may add the right-to-left agreement.
    results, rtl = [], {}
    for r in (r for run in runs for r in run["results"]):
        if "rtl_agreement" in r:
            rtl[r["policy"]] = r["rtl_agreement"]
        if r["policy"] not in {x["policy"] for x in results}:
            results.append(r)
    first = runs[0]
    key = next(k for k in results[0] if k.startswith("solve_rate_by_"))
    by = key.removeprefix("solve_rate_by_")
    lines = [
        f"# {title}",
        "",
        f"{first['n']} held-out items from `{first['data']}`, MDM `{first['mdm']}`, one position "
        f"per step (k={first['k']}), seed {first['seed']}. Solve rate: whole answer right (exact "
        "verifier); cell acc: fraction of answer positions right; 95% Wilson interval.",
        "",
        "| policy | solve rate | 95% CI | cell acc | NFE | items/s |"
        + (" right-to-left |" if rtl else ""),
        "|---|---|---|---|---|---|" + ("---|" if rtl else ""),
    ]
    for r in results:
        lo, hi = r["solve_ci95"]
        lines.append(
            f"| {r['policy']} | {100 * r['solve_rate']:.1f}% | [{100 * lo:.1f}, {100 * hi:.1f}] | "
            f"{100 * r['cell_acc']:.1f}% | {r['nfe']:.1f} | {r['items_per_s']:.1f} |"
            + (f" {100 * rtl[r['policy']]:.0f}% |" if r["policy"] in rtl else (" |" if rtl else ""))
        )
    if rtl:
        lines += [
            "",
            "right-to-left: share of a policy's steps that reveal the rightmost still-masked digit "
            "(100% = the order carries flow in).",
        ]
    levels = sorted({int(lv) for r in results for lv in r.get(key, {})})
    lines += [
        "",
        f"Solve rate by number of {by}:",
        "",
        "| policy | " + " | ".join(map(str, levels)) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for r in results:
        cells = [r.get(key, {}).get(str(lv)) for lv in levels]
        lines.append(
            f"| {r['policy']} | "
            + " | ".join("" if c is None else f"{100 * c:.0f}" for c in cells)
            + " |"
        )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
