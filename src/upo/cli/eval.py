"""`upo eval`: compare unmasking policies on a task's held-out data.

The evaluation itself is upo.evaluation (EvalSettings, Evaluation): this module parses the flags
into its settings and prints what it returns: the table, the breakdown by difficulty, --show's
answers, --plot's figures and --show-order.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from ..errors import SettingError, UpoError
from ..tasks.base import Batch


def run_eval(args) -> int:
    try:
        return evaluate_and_print(args)
    except SettingError as err:  # worded with EvalSettings' field names: say the flags instead
        raise UpoError(err.worded(flag)) from None


def flag(field: str) -> str:
    """The `upo eval` flag of an EvalSettings field: pass_at -> --pass-at."""
    return "--" + field.replace("_", "-")


def evaluate_and_print(args) -> int:
    from ..evaluation import EvalSettings, Evaluation

    fields = {f.name for f in dataclasses.fields(EvalSettings)}
    settings = EvalSettings(**{name: getattr(args, name) for name in fields})
    # The --json lock, once Evaluation.run takes it, is held to the very end, error or not.
    with Evaluation(settings) as evaluation:
        run = evaluation.inputs
        if (args.show_order or args.plot) and not 0 <= args.show_item < len(run.batch):
            raise UpoError(
                f"--show-item {args.show_item}: there are {len(run.batch)} items (0-based)"
            )
        results = evaluation.run()
        if args.show:  # a text task's flag: its answers as text
            for r in results:
                for text in run.task.answers(run.batch, r.outputs)[: args.show]:
                    print(f"--- {r.policy}: {text!r}")
        print_tables(args, run, results)
        if args.json:
            evaluation.write(results)
            print(f"\nwrote {args.json}", file=sys.stderr)
        if args.plot:
            draw_figures(
                args.plot, run.task, run.batch, results, args.show_item, evaluation.policies, args.k
            )
        if args.show_order:
            show_orders(run.task, results, args.show_item)
    return 0


def print_tables(args, run, results: list) -> None:
    """The results table, and solve rates by difficulty when the items differ in it."""
    from ..evaluate import markdown_table
    from ..evaluation import solve_rates_by_level

    task, batch = run.task, run.batch
    note = f" ({run.note})" if run.note else ""
    cached = f", cache {args.cache}" if args.cache != "none" else ""
    print(f"\n{task.name}, {len(batch)} items, MDM {args.mdm}{note}{cached}\n")
    print(markdown_table(results))
    levels = np.unique(task.difficulty(batch))
    if run.by_difficulty and len(levels) > 1:
        print(f"\nsolve rate by number of {task.difficulty_name}:\n")
        print("| policy | " + " | ".join(str(int(lv)) for lv in levels) + " |")
        print("|---|" + "---|" * len(levels))
        for r in results:
            rates = solve_rates_by_level(run, r).values()
            print(f"| {r.policy} | " + " | ".join(f"{100 * v:.1f}%" for v in rates) + " |")


def draw_figures(
    folder: str, task, batch: Batch, results: list, item: int, policies: list, k: int = 1
) -> None:
    from ..plots import (
        fill_orders,
        policy_family,
        policy_points,
        solve_rate_bars,
        solve_rate_by_difficulty,
        solve_rate_vs_nfe,
    )

    out = Path(folder)
    title = f"{task.name}: {len(batch)} held-out items"
    solve_rate_bars(results, out / "solve_rate.png", title)
    points = policy_points(results, [policy_family(p) for p in policies])
    per_step = f", {k} positions per step" if k > 1 else ""
    solve_rate_vs_nfe(points, out / "solve_rate_vs_nfe.png", title + per_step, join=False)
    solve_rate_by_difficulty(results, task.difficulty(batch), out / "solve_rate_by_blanks.png")
    if task.grid_side is not None:  # the fill-order panels draw grids
        fill_orders(results, item, task.grid_side, out / "fill_order.png", batch.answers)
    print(f"wrote figures to {out}", file=sys.stderr)


def show_orders(task, results: list, item: int) -> None:
    from ..plots import order_text

    for r in results:
        order = r.order[item]
        # A grid as a grid; a sequence as the reveal step of each masked position in order.
        text = (
            order_text(order, task.grid_side)
            if task.grid_side is not None
            else " ".join(str(int(v)) for v in order if v >= 0)
        )
        print(f"\nfill order of item {item} under {r.policy}:\n{text}")


def add_hf_arguments(p) -> None:
    p.add_argument("--trust-remote-code", action="store_true", help="needed by LLaDA and Dream")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--mask-id", type=int)
    p.add_argument("--gen-length", type=int)
    p.add_argument("--block-length", type=int, help="0 = one block")
    p.add_argument("--no-chat", action="store_true", help="do not use the chat template")
    p.add_argument(
        "--instructions",
        help="sudoku4-paper: the instruction block before the puzzle (default: the paper's)",
    )
    p.add_argument("--show", type=int, default=0, help="print the first N answers per policy")
    p.add_argument(
        "--confidence",
        choices=["float32", "model"],
        help="model: confidences as LLaDA's generate() computes them (softmax in the model's "
        "dtype, torch.topk ties), to reproduce its bf16 decodes exactly (use --batch-size 1); "
        "default float32",
    )
    p.add_argument(
        "--allow-unpadded-batching",
        action="store_true",
        help="batch prompts even if the padding probe finds that padding changes the logits",
    )


def register(sub) -> None:
    from ..assets import names
    from ..policies.registry import policies_help

    # The shipped files by name, so that the help says what works without a path.
    checkpoints = names("checkpoints")
    mdms = ", ".join(n for n in checkpoints if n.endswith("-mdm")) or "none in this install"
    p = sub.add_parser("eval", help="evaluate unmasking policies")
    p.add_argument("--task", required=True)
    p.add_argument(
        "--mdm",
        required=True,
        help=f"MDM checkpoint directory, or a shipped MDM by name ({mdms}; a local directory of "
        "that name wins); for text tasks a Hugging Face MDM (a Hub id or directory; hf: before either is accepted)",
    )
    p.add_argument(
        "--data",
        required=True,
        help="puzzles (JSONL, CSV or plain text), or a shipped puzzle file by name "
        "(e.g. sudoku4-test.jsonl; a local file of that name wins); text tasks: JSONL / JSON / "
        "Parquet / CSV, or hf:NAME[:CONFIG]:SPLIT with the datasets package",
    )
    p.add_argument("--policies", default="random,confidence,margin,entropy", help=policies_help())
    p.add_argument("--n", type=int, help="evaluate only the first N items")
    p.add_argument("--batch-size", type=int, help="default: 64, or 8 for text tasks")
    p.add_argument("--k", type=int, default=1, help="positions revealed per step")
    p.add_argument(
        "--cache",
        choices=("none", "prefix", "dual"),
        default="none",
        help="block-wise key/value caching (Fast-dLLM; docs/cache.md): the MDM runs whole once "
        "per block and inside it only on the block (dual) or the block and what follows "
        "(prefix); faster, approximate. LLaDA, Dream and upo's own MDMs. Default none: exact",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--dtype",
        help="run the MDM in this dtype: float32 makes results independent of --batch-size "
        "(the built-in MDM runs bf16 matmuls where the CPU has native bf16, whose rounding "
        "depends on batch shape; auto, the default, uses float32 on other CPUs)",
    )
    p.add_argument(
        "--pass-at",
        type=int,
        default=1,
        help="N samples per item for stochastic policies: pass@1..N and the likeliest of N",
    )
    p.add_argument(
        "--json",
        help="write results as JSON; until then the finished batches are kept in JSON.partial/",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted evaluation with the same flags from JSON.partial/",
    )
    p.add_argument("--plot", help="directory for PNG figures")
    p.add_argument("--show-order", action="store_true", help="print the fill order of one item")
    p.add_argument("--show-item", type=int, default=0)
    p.add_argument("--skip-invalid", action="store_true")
    add_hf_arguments(p.add_argument_group("text tasks on a Hugging Face MDM"))
    p.set_defaults(func=run_eval)
