"""Live views of a training run's metrics: TensorBoard or Weights & Biases (`--report-to`).

`metrics.jsonl` stays the exact record (it is rewound on resume); a reporter only mirrors each
step's numbers. Each backend is an optional package, so `reporter_opener` checks the import
before the run directory exists, and a missing package is a one-line error that changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import UpoError

REPORT_TO = ("tensorboard", "wandb", "none")


def numeric(record: dict) -> dict[str, float]:
    """The fields a chart can show: numbers, not flags or text."""
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "step"
    }


class TensorBoardReporter:
    def __init__(self, writer_class, out_dir: Path):
        self.writer = writer_class(str(out_dir / "tensorboard"))

    def log(self, record: dict, step: int) -> None:
        for key, value in numeric(record).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbReporter:
    """One W&B run per training process start; a resumed run opens a new W&B run whose steps
    continue the numbering (set WANDB_MODE=offline to log without an account)."""

    def __init__(self, wandb, out_dir: Path, config: dict):
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "upo"),
            name=out_dir.name,
            dir=str(out_dir),
            config=config,
        )

    def log(self, record: dict, step: int) -> None:
        self.run.log(numeric(record), step=step)

    def close(self) -> None:
        self.run.finish()


def reporter_opener(report_to: str | None) -> Callable[[Path, dict], object] | None:
    """A function (out_dir, config) -> reporter for `report_to`, or None for no reporter.
    Raises UpoError now, before any output exists, when the backend's package is missing."""
    if report_to in (None, "none"):
        return None
    if report_to == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UpoError(
                "--report-to tensorboard needs the tensorboard package "
                "(pip install tensorboard, or upo's extra: pip install -e '.[tensorboard]')"
            ) from None
        return lambda out_dir, config: TensorBoardReporter(SummaryWriter, out_dir)
    if report_to == "wandb":
        try:
            import wandb
        except ImportError:
            raise UpoError(
                "--report-to wandb needs the wandb package (pip install wandb; "
                "WANDB_MODE=offline logs without an account)"
            ) from None
        return lambda out_dir, config: WandbReporter(wandb, out_dir, config)
    raise UpoError(f"unknown --report-to {report_to!r}; valid: {', '.join(REPORT_TO)}")
