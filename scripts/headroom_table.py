"""The headroom screen's table (scripts/headroom_screen.sh): for each regime, max-confidence, the
best one-forward rule, pass@8 and the search, then every row with its interval and NFE.

Usage: python scripts/headroom_table.py RESULTS_DIR OUT.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from upo.policies.registry import policy_class
from upo.policies.rules import HAND_RULES

# One line per regime: what it is, in the screen's order. A regime's results are every
# RESULTS_DIR/NAME*.json (the rules, and extra files such as the right-to-left order).
REGIMES = {
    "sudoku9": "9x9 Sudoku, shipped MDM, 56 blanks (in distribution)",
    "sudoku9-58": "9x9 Sudoku, shipped MDM, 58 blanks (harder)",
    "sudoku9-k3": "9x9 Sudoku, 56 blanks, 3 cells per step (parallel budget)",
    "addition-carry": "addition, shipped MDM (random digits) on carry-heavy sums",
    "addition-carry-shallow": "addition, 0.09M-parameter MDM on carry-heavy sums",
    "zebra4": "Zebra 4x4, shipped MDM",
    "sums": "sums of 5 numbers, two phrasings in one block, shipped 0.1M MDM",
    "sums-deep": "sums of 5 numbers, two phrasings in one block, 0.67M MDM",
}
SAMPLED = ("softmax:", "topk-random:", "random")  # sampled orders: pass@8 is the ceiling
SEARCH = "lookahead"
RIGHT_TO_LEFT = "right-to-left (oracle order)"  # scripts/right_to_left.py's row, a hand rule too


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def ci(r: dict) -> str:
    lo, hi = r["solve_ci95"]
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def regime_of(stem: str) -> str | None:
    """The regime a results file belongs to: the longest regime name it starts with."""
    names = [n for n in REGIMES if stem == n or stem.startswith(n + "-")]
    return max(names, key=len, default=None)


def load(results: Path, name: str) -> list[dict]:
    files = sorted(f for f in results.glob("*.json") if regime_of(f.stem) == name)
    files.sort(key=lambda f: f.stem != name)  # the regime's own run first
    rows, seen = [], set()
    for f in files:
        for r in json.loads(f.read_text())["results"]:
            if r["policy"] not in seen:
                seen.add(r["policy"])
                rows.append(r)
    return rows


def one_forward(r: dict) -> bool:
    """A hand rule, as the policy registry knows them: what "best one-forward rule" is chosen
    from (learned policies and the search are not; sampled rules never come near the best)."""
    return r["policy"] == RIGHT_TO_LEFT or policy_class(r["policy"]) in HAND_RULES


def main(results_dir: str, out: str) -> None:
    results = Path(results_dir)
    summary = [
        "| regime | max-confidence | best one-forward rule | pass@8 (sampled) | likeliest of 8 "
        "| search | one-forward headroom |",
        "|---|---|---|---|---|---|---|",
    ]
    details = []
    for name, title in REGIMES.items():
        rows = load(results, name)
        if not rows:
            continue
        conf = next(r for r in rows if r["policy"] == "confidence")
        best = max((r for r in rows if one_forward(r)), key=lambda r: r["solve_rate"])
        sampled = [r for r in rows if r["policy"].startswith(SAMPLED) and "pass_at" in r]
        passat = max((r["pass_at"][-1] for r in sampled), default=None)
        likeliest = max((r["likeliest_of_n"]["solve_rate"] for r in sampled), default=None)
        search = [r for r in rows if r["policy"].startswith(SEARCH)]
        summary.append(
            f"| {title} | {pct(conf['solve_rate'])} {ci(conf)} | {best['policy']} "
            f"{pct(best['solve_rate'])} {ci(best)} | {pct(passat) if passat is not None else '-'} "
            f"| {pct(likeliest) if likeliest is not None else '-'} "
            f"| {pct(search[0]['solve_rate']) + ' (' + search[0]['policy'] + ')' if search else '-'} "
            f"| {100 * (best['solve_rate'] - conf['solve_rate']):+.1f} points |"
        )
        details += [
            f"### {title}",
            "",
            "| policy | solve rate | 95% CI | cell acc | NFE | pass@8 | likeliest of 8 |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            pass8 = pct(r["pass_at"][-1]) if len(r.get("pass_at", [])) > 1 else ""
            like = pct(r["likeliest_of_n"]["solve_rate"]) if "likeliest_of_n" in r else ""
            details.append(
                f"| {r['policy']} | {pct(r['solve_rate'])} | {ci(r)} | {pct(r['cell_acc'])} "
                f"| {r['nfe']:.1f} | {pass8} | {like} |"
            )
        details.append("")
    text = [
        "# Headroom screen: where could a learned order beat max-confidence?",
        "",
        "Made by `bash scripts/headroom_screen.sh` (validation data only, 300 items per regime,",
        "seed 0; the JSON of every run is in [headroom/](headroom/)). Solve rate with 95% Wilson",
        "intervals; NFE = MDM calls per item. *One-forward* rules see only the current MDM forward",
        "(what a UPO policy sees). pass@8 counts an item solved when any of 8 orders sampled from",
        "softmax(confidence / 0.05) solves it (it uses the answer); the likeliest of 8 keeps the",
        "sample the MDM finds likeliest (no answer); the search is `lookahead:3`. In the regime of",
        "3 cells per step, `threshold:P` chooses how many cells each step fills (fewer MDM calls",
        "than 19 on average) and `sudoku9-parallel` is the shipped learned set policy.",
        "",
        *summary,
        "",
        *details,
    ]
    Path(out).write_text("\n".join(text))


if __name__ == "__main__":
    main(*sys.argv[1:])
