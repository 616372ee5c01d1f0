"""`upo demo`: the whole story in a few minutes on a laptop CPU, with the shipped checkpoints.

Makes a fresh held-out puzzle set (disjoint from the training files), evaluates every hand rule,
the shipped learned policy, a parallel rule and the lookahead search, prints the table and writes
demo-report/ (report.md + PNG figures: solve rates, solve rate against MDM calls, one puzzle's
decodes as grids, the learned policy's training curves). Then the same for the other shipped tasks
(addition, Zebra) on their held-out files.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .assets import find, hint, shipped_files
from .errors import UpoError
from .evaluate import evaluate_policy, markdown_table
from .evaluation import EvalSettings, Evaluation
from .io_utils import atomic_write_text, check_file_target, write_json
from .models.registry import load_mdm
from .plots import (
    fill_orders,
    order_text,
    policy_family,
    policy_points,
    read_metrics,
    solve_rate_bars,
    solve_rate_by_difficulty,
    solve_rate_vs_nfe,
    training_curves,
)
from .policies.resolve import resolve_policy
from .tasks.base import Batch
from .tasks.registry import get_task

SUDOKU = "sudoku9"  # the task of the demo's main table and figures
RULES = [
    "random",
    "left-to-right",
    "confidence",
    "margin",
    "entropy",
    "topk-random:5",
    "softmax:0.1",
]
# After the learned policy: fewer MDM calls (Fast-dLLM's threshold rule: every cell above 90%
# confidence per step) and more (the search; the setting chosen on validation, README).
FEWER_CALLS = "threshold:0.9"
SEARCH = "lookahead:4:0.9"
SEARCH_NOTE = (
    f" `{SEARCH}` is the lookahead search (more calls): where no cell is 90% sure, it finishes "
    "the puzzle once for each of the 4 most confident cells and keeps the completion the MDM "
    "finds likeliest."
)


# The other shipped tasks: (task, MDM, learned policy, held-out file), each a shipped name or a
# path (upo.assets), so that the demo runs from any directory. Each is shown when its MDM and file
# are present; their held-out files are the committed test splits (the Sudoku part makes fresh
# puzzles instead because its generator makes unique puzzles quickly).
OTHER_TASKS = [
    (
        "addition",
        "addition-mdm",
        "addition-policy",
        "addition-carry-test.jsonl",  # on random digits every order solves ~99%
    ),
    ("zebra4", "zebra-mdm", "zebra-policy", "zebra4-test.jsonl"),
]
OTHER_RULES = ["random", "left-to-right", "confidence", "margin", "entropy"]

# Every file run_demo writes into --out, checked before any work: a minutes-long demo should not
# end by refusing to write its report over a FIFO or device someone left there.
OUTPUT_FILES = (
    "heldout.jsonl",
    "results.json",
    "report.md",
    "solve_rate.png",
    "solve_rate_vs_nfe.png",
    "solve_rate_by_blanks.png",
    "fill_order.png",
    "training_curves.png",
)


def other_task_plan(n: int) -> list[tuple[str, str, list[str], str, int]]:
    """(task, MDM, policy names, held-out file, items) of each other shipped task present."""
    plan = []
    for name, mdm_path, policy_path, data_path in OTHER_TASKS:
        if not (
            Path(find(mdm_path, "checkpoints")).is_dir() and Path(find(data_path, "data")).is_file()
        ):
            continue
        names = OTHER_RULES + (
            [policy_path] if Path(find(policy_path, "checkpoints")).is_dir() else []
        )
        items = min(n, len(get_task(name).load(find(data_path, "data"))))
        plan.append((name, mdm_path, names, data_path, items))
    return plan


def other_task_tables(
    n: int, batch_size: int = 64, dtype: str = "auto", bar: tqdm | None = None
) -> list[str]:
    """Markdown sections for the other shipped tasks: every hand rule and the learned policy on
    the first `n` items of each held-out file, the MDMs run in `dtype`. `bar` (the demo's overall
    progress bar) advances with every decoded batch."""
    sections = []
    for name, mdm_path, names, data_path, items in other_task_plan(n):
        settings = EvalSettings(
            name, mdm_path, data_path, ",".join(names), n=items, batch_size=batch_size, dtype=dtype
        )
        with Evaluation(settings) as evaluation:  # upo eval's evaluation, without its printing
            results = evaluation.run(progress=bar.update if bar is not None else lambda _: None)
        batch = evaluation.inputs.batch
        title = f"{name}, the first {len(batch)} items of `{data_path}`, MDM `{mdm_path}`"
        table = markdown_table(results)
        print(f"\n{title}\n\n{table}")
        sections.append(f"## {title}\n\n{table}\n")
    return sections


def headline(results: list, learned: str | None) -> str:
    """What this run's numbers say about the three kinds of order, in one paragraph."""
    by_name = {r.policy: r for r in results}

    def said(name: str) -> str:
        r = by_name[name]
        lo, hi = r.solve_ci95
        return f"{100 * r.solve_rate:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] at {r.nfe:.0f} calls"

    parts = [f"Here max-confidence solved {said('confidence')} per puzzle"]
    if learned is not None:
        parts.append(
            f"the learned policy, which also sees one MDM forward per step, {said(Path(learned).name)}"
        )
    if SEARCH in by_name:
        parts.append(f"the search {said(SEARCH)}")
    parts[-1] += f", and `{FEWER_CALLS}` {said(FEWER_CALLS)}."
    return "; ".join(parts) + (
        " Read the differences against the 95% intervals: on the 1,000-puzzle test set (README) "
        "the learned policy only matches max-confidence, and the search beats both."
    )


def existing_puzzles(paths: list[Path]) -> set[str]:
    task = get_task(SUDOKU)
    seen: set[str] = set()
    for p in paths:
        if p.is_file():
            seen.update(task.keys(task.load(p, skip_invalid=True)))
    return seen


def fresh_puzzles(task, n: int, blanks: tuple[int, int], seed: int) -> Batch:
    """`n` new 9x9 puzzles, none of them in any shipped Sudoku puzzle file."""
    # Never evaluate on a puzzle the policy trained on: exclude every shipped Sudoku puzzle file
    # (the repository's data/, or the wheel's copy of it), wherever the demo runs from.
    exclude = existing_puzzles(shipped_files("data", "sudoku9-*.jsonl"))
    with tqdm(total=n, desc="make held-out puzzles", file=sys.stderr) as bar:
        return task.generate(n, blanks, seed, exclude=exclude, progress=bar.update)


def decode_policies(mdm, task, batch: Batch, names: list[str], bar: tqdm) -> tuple[list, list]:
    """(PolicyResult, plot family) of each named policy on `batch`, advancing `bar`."""
    results, families = [], []
    for name in names:
        policy = resolve_policy(name, mdm)
        bar.set_postfix_str(f"sudoku9: {policy.name}")
        results.append(
            evaluate_policy(mdm, task, batch, policy, batch_size=64, progress=bar.update)
        )
        families.append(policy_family(policy))
    return results, families


def shown_puzzle(results: list) -> tuple[int, list]:
    """(the puzzle the fill-order panels show, the results shown): max-confidence, the learned
    policy and the search on one puzzle that max-confidence fails and the others solve, when
    there is one."""
    by_name = {r.policy: r for r in results}
    conf = by_name["confidence"]
    shown = [conf] + [r for r in results if r.policy not in RULES and r.policy != FEWER_CALLS]
    others_solve = np.logical_and.reduce([r.solved.astype(bool) for r in shown[1:]])
    differs = np.flatnonzero(~conf.solved.astype(bool) & others_solve)
    if not len(differs):
        differs = np.flatnonzero(shown[-1].solved != conf.solved)
    return (int(differs[0]) if len(differs) else 0), shown


@dataclass
class SudokuPart:
    """What the demo's Sudoku part decoded, and with what: results.json and report.md say it."""

    n: int
    blanks: tuple[int, int]
    seed: int
    mdm_path: str
    mdm_dtype: str
    policy_path: str
    learned: bool  # the learned policy was found and decoded
    search: bool  # the lookahead search was decoded (upo demo --search)
    results: list  # PolicyResult of each policy, in the table's order


def draw_sudoku_figures(
    out_dir: Path, task, batch: Batch, part: SudokuPart, families: list, item: int, shown: list
) -> None:
    """The Sudoku part's figures: solve rates, against MDM calls, by blanks; puzzle `item`'s
    fill orders under the `shown` policies."""
    results = part.results
    title = f"9x9 Sudoku, {part.n} fresh held-out puzzles"
    solve_rate_bars(results, out_dir / "solve_rate.png", title)
    solve_rate_vs_nfe(
        policy_points(results, families), out_dir / "solve_rate_vs_nfe.png", title, join=False
    )
    solve_rate_by_difficulty(results, task.difficulty(batch), out_dir / "solve_rate_by_blanks.png")
    fill_orders(
        shown, item, task.grid_side, out_dir / "fill_order.png", batch.answers,
        f"held-out puzzle {item}: the order each policy filled it in",
    )  # fmt: skip


def training_curves_section(policy_dir: Path, policy_path: str, out_dir: Path) -> str:
    """The report's section on how the learned policy was trained, its figure drawn; empty when
    the policy has no metrics.jsonl."""
    if not (policy_dir / "metrics.jsonl").is_file():
        return ""
    training_curves(
        read_metrics(policy_dir), out_dir / "training_curves.png", Path(policy_path).name
    )
    return (
        f"\nHow `{policy_path}` was trained (`upo plot {policy_path}` draws this for any "
        "run): the mean reward of its GRPO rollouts, and its validation solve rate against "
        "max-confidence's on the same puzzles.\n\n![training curves](training_curves.png)\n"
    )


def demo_record(part: SudokuPart) -> dict:
    """results.json: the Sudoku table's results and what they were decoded with."""
    return {
        "task": SUDOKU,
        "n": part.n,
        "mdm": part.mdm_path,
        "dtype": part.mdm_dtype,
        "blanks": list(part.blanks),
        "seed": part.seed,
        "results": [r.summary() for r in part.results],
    }


def report_text(part: SudokuPart, table: str, item: int, orders: str, curves: str) -> str:
    """report.md's Sudoku part; `{seconds}` stands for the demo's time, known only at its end."""
    n, (low, high) = part.n, part.blanks
    return f"""# upo demo report

9x9 Sudoku, {n} fresh held-out puzzles ({low}-{high} blanks, seed {part.seed}, unique solutions),
MDM `{part.mdm_path}` in {part.mdm_dtype}, learned policy `{part.policy_path}`. Made by `upo demo` in {{seconds}} s.

{table}

Solve rate = fraction of puzzles completed validly; 95% Wilson intervals; cell acc = fraction of
blanks equal to the solution; NFE = MDM calls per puzzle. `{FEWER_CALLS}` fills every cell above
90% confidence at once (fewer calls).{SEARCH_NOTE if part.search else ""}

![solve rate against MDM calls](solve_rate_vs_nfe.png)

{headline(part.results, part.policy_path if part.learned else None)}

![solve rate](solve_rate.png)

![solve rate by blanks](solve_rate_by_blanks.png)

Puzzle {item} under each order: every cell coloured by the step it was filled at, wrong cells
outlined in red.

![fill order](fill_order.png)

The same orders as step numbers (`.` = given):

{orders}
{curves}"""


def run_demo(
    out: str = "demo-report",
    n: int = 200,
    blanks: tuple[int, int] = (52, 58),
    seed: int = 2026,
    mdm_path: str = "sudoku9-mdm",
    policy_path: str = "sudoku9-policy",
    threads: int = 2,
    dtype: str = "auto",
    search: bool = False,
) -> int:
    torch.set_num_threads(threads)
    out_dir = Path(out)
    for name in OUTPUT_FILES:
        check_file_target(out_dir / name)
    task = get_task(SUDOKU)
    if not Path(find(mdm_path, "checkpoints")).is_dir():
        raise UpoError(f"{mdm_path}: shipped MDM not found{hint(mdm_path, 'checkpoints', '-mdm')}")
    mdm = load_mdm(mdm_path, options={"dtype": dtype})
    start = time.perf_counter()
    batch = fresh_puzzles(task, n, blanks, seed)
    task.write(out_dir / "heldout.jsonl", batch)
    policy_dir = Path(find(policy_path, "checkpoints"))
    learned = policy_dir.is_dir()
    # The search costs about 4 greedy decodes: only with `upo demo --search`.
    names = (
        RULES + ([policy_path] if learned else []) + [FEWER_CALLS] + ([SEARCH] if search else [])
    )
    # One bar over every puzzle the demo decodes, all tables included, so its ETA is the demo's;
    # it advances with each batch of 64.
    plan = other_task_plan(n)
    total = n * len(names) + sum(items * len(rules) for _, _, rules, _, items in plan)
    bar = tqdm(total=total, desc="upo demo: decoding", unit="puzzle", file=sys.stderr)

    results, families = decode_policies(mdm, task, batch, names, bar)
    table = markdown_table(results)
    print(f"\n9x9 Sudoku, {n} fresh held-out puzzles with {blanks[0]}-{blanks[1]} blanks\n")
    print(table)

    part = SudokuPart(
        n, blanks, seed, mdm_path, mdm.dtype_used, policy_path, learned, search, results
    )
    item, shown = shown_puzzle(results)
    draw_sudoku_figures(out_dir, task, batch, part, families, item, shown)
    orders = "\n\n".join(
        f"{r.policy}:\n```\n{order_text(r.order[item], task.grid_side)}\n```" for r in shown
    )
    curves = training_curves_section(policy_dir, policy_path, out_dir) if learned else ""
    write_json(out_dir / "results.json", demo_record(part))
    report = report_text(part, table, item, orders, curves)
    others = other_task_tables(n, dtype=dtype, bar=bar)
    bar.close()
    if others:
        report += "\n# Other tasks\n\n" + "\n".join(others)
    seconds = time.perf_counter() - start
    atomic_write_text(out_dir / "report.md", report.replace("{seconds}", f"{seconds:.0f}"))
    print(f"\nupo demo took {seconds:.0f} s. The report, with its figures:")
    print(f"  {out_dir / 'report.md'}  ({(out_dir / 'report.md').resolve()})")
    return 0
