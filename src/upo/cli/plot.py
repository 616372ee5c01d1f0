"""`upo plot DIR`: the curves of a training run (its metrics.jsonl) as a PNG."""

from __future__ import annotations

import sys
from pathlib import Path

from ..assets import find
from ..errors import UpoError


def cmd_plot(args) -> int:
    from ..io_utils import check_file_target
    from ..plots import NO_CURVE, read_metrics, run_kind, training_curves

    run = Path(find(args.run, "checkpoints"))  # or a shipped checkpoint by name
    if not run.exists():
        raise UpoError(f"{run}: no such training run directory or metrics file")
    folder = run if run.is_dir() else run.parent
    if args.out:
        out = Path(args.out)
    elif str(run) != args.run:  # a shipped checkpoint: never write into the installed package
        out = Path(f"{args.run}-training_curves.png")
    else:
        out = folder / "training_curves.png"
    check_file_target(out)
    records = read_metrics(run)
    if run_kind(records) is None:  # said here, where the file's name is known
        metrics = run / "metrics.jsonl" if run.is_dir() else run
        raise UpoError(f"{metrics}: no training curve to draw ({NO_CURVE})")
    training_curves(records, out, title=folder.name or str(folder))
    print(f"wrote {out} ({len(records)} records of {run})", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="draw a training run's curves (reward, loss, validation) from its metrics.jsonl",
    )
    p.add_argument(
        "run",
        metavar="DIR",
        help="a training run directory, its metrics.jsonl, or a shipped checkpoint by name",
    )
    p.add_argument(
        "--out",
        help="the PNG to write (default: DIR/training_curves.png; NAME-training_curves.png here "
        "for a shipped checkpoint)",
    )
    p.set_defaults(func=cmd_plot)
