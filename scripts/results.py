"""Collect UPO runs into docs/results: the ablation table (validation solve rate at equal budget)
and EMA reward curves. Usage: python scripts/results.py [--runs runs/ablations] [--main DIR]"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from upo.evaluate import wilson_interval
from upo.io_utils import atomic_write_text, read_jsonl
from upo.plots import reward_curves


def eval_table(paths: list[Path]) -> str:
    """Merge `upo eval --json` outputs (same data file) into one markdown table."""
    lines = [
        "| policy | solve rate | 95% CI | cell acc | NFE | items/s |",
        "|---|---|---|---|---|---|",
    ]
    for path in paths:
        if not path.is_file():
            continue
        for r in json.loads(path.read_text())["results"]:
            lo, hi = r["solve_ci95"]
            lines.append(
                f"| {r['policy']} | {100 * r['solve_rate']:.1f}% | [{100 * lo:.1f}, {100 * hi:.1f}] | "
                f"{100 * r['cell_acc']:.1f}% | {r['nfe']:.1f} | {r['items_per_s']:.1f} |"
            )
    return "\n".join(lines)


def pass_at_table(path: Path) -> str:
    if not path.is_file():
        return ""
    data = json.loads(path.read_text())
    n = max(len(r.get("pass_at") or [r["solve_rate"]]) for r in data["results"])
    # Likeliest of N (the sample the MDM finds most likely; no answer used) beside the curve.
    likeliest = any("likeliest_of_n" in r for r in data["results"])
    lines = [
        "| policy | "
        + " | ".join(f"pass@{k}" for k in range(1, n + 1))
        + (f" | likeliest of {n}" if likeliest else "")
        + " |",
        "|---|" + "---|" * (n + likeliest),
    ]
    for r in data["results"]:
        curve = r.get("pass_at") or [r["solve_rate"]]
        row = f"| {r['policy']} | " + " | ".join(f"{100 * v:.1f}%" for v in curve) + " |"
        row += " |" * (n - len(curve))
        if likeliest:
            best = r.get("likeliest_of_n")
            row += f" {100 * best['solve_rate']:.1f}% |" if best else " |"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs/ablations")
    ap.add_argument("--main", default="checkpoints/sudoku9-policy")
    ap.add_argument("--out", default="docs/results")
    args = ap.parse_args()
    out = Path(args.out)
    if Path(args.runs).is_dir():
        runs_table(Path(args.runs), Path(args.main), out)
    else:
        # Without the ablation runs the table would shrink to the shipped row: keep the old one.
        print(f"{args.runs}: no runs here; upo-sudoku9-runs.md and the reward curves are kept")
    eval_tables(out)


def runs_table(runs: Path, main: Path, out: Path) -> None:
    """The UPO runs table and reward curves, from each run's meta.json and metrics.jsonl."""
    rows, curves, solved_curves = [], {}, {}
    dirs = sorted(runs.glob("*")) + [main]
    for d in dirs:
        meta_path, log_path = d / "meta.json", d / "metrics.jsonl"
        if not meta_path.is_file() or not log_path.is_file():
            continue
        meta = json.loads(meta_path.read_text())
        log = read_jsonl(log_path)
        val = meta.get("validation") or {}
        name = d.name if d.parent.name == runs.name else f"shipped ({d.name})"
        n_val = 150
        rate = val.get("val_solve_rate")
        ci = wilson_interval(rate * n_val, n_val) if rate is not None else None
        rows.append(
            (
                name,
                meta.get("reference"),
                meta.get("init"),
                meta.get("steps"),
                rate,
                ci,
                val.get("val_confidence_solve_rate"),
                sum(r["seconds_rollout"] + r["seconds_update"] for r in log) / 60,
            )
        )
        curves[name] = [(r["step"], r["reward_mean"]) for r in log]
        solved_curves[name] = [(r["step"], r["solved_mean"]) for r in log]
    lines = [
        "| run | reference | init | steps | val solve rate | 95% CI | confidence on val | train minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, ref, init, steps, rate, ci, conf, minutes in rows:
        rate_s = f"{100 * rate:.1f}%" if rate is not None else "-"
        ci_s = f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "-"
        conf_s = f"{100 * conf:.1f}%" if conf is not None else "-"
        lines.append(
            f"| {name} | {ref} | {init} | {steps} | {rate_s} | {ci_s} | {conf_s} | {minutes:.0f} |"
        )
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    reward_curves(
        curves, out / "upo-sudoku9-reward.png", "rollout reward: fraction of blanks right (EMA)"
    )
    reward_curves(solved_curves, out / "upo-sudoku9-solved.png", "rollout solve rate (EMA)")
    atomic_write_text(out / "upo-sudoku9-runs.md", table + "\n")
    print(table)


def eval_tables(r: Path) -> None:
    """The test-set tables, from the JSON files of scripts/evaluate_results.sh."""
    tables = {
        "sudoku9-test.md": eval_table(
            [r / "sudoku9-test-rules.json", r / "sudoku9-test-learned.json"]
        ),
        "sudoku9-test-hard.md": eval_table(
            [r / "sudoku9-test-hard-rules.json", r / "sudoku9-test-hard-learned.json"]
        ),
        "sudoku9-passat.md": pass_at_table(r / "sudoku9-test-passat.json"),
        # trial-decode search beside max-confidence from one run, then the cheaper setting
        "sudoku9-test-search.md": eval_table(
            [r / "sudoku9-test-search.json", r / "sudoku9-test-search-gated.json"]
        ),
        "sudoku9-test-hard-search.md": eval_table(
            [r / "sudoku9-test-hard-search.json", r / "sudoku9-test-hard-search-gated.json"]
        ),
        "sudoku4-test.md": eval_table([r / "sudoku4-test.json"]),
    }
    for name, text in tables.items():
        if text:
            atomic_write_text(r / name, text + "\n")
            print(f"\n{name}\n{text}")


if __name__ == "__main__":
    main()
