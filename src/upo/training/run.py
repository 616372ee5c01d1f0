"""The run skeleton every trainer shares: a run directory that starts fresh or resumes where it
stopped, a metrics log, and checkpoints with their metadata.

A run directory is a checkpoint (config.json + model.safetensors + meta.json) plus metrics.jsonl;
while the run is unfinished it also holds train_state.json + train_state.safetensors (optimizer
moments, the step, generator states), which the final checkpoint drops. A trainer is then its
maths plus a short loop:

    run = Run(out_dir, kind="mdm", task=..., command=..., config={..., "train": settings})
    if (done := run.prepare(resume)) is not None:
        return done                       # already complete with these settings
    run.restore(model, optimizer)         # on --resume: weights, moments, run.step, run.extra
    run.open_log()
    for step in range(run.step, total):
        ...                               # the trainer's own update
        run.write({"step": step + 1, ...})
        run.save(model, step + 1, complete=False, meta={...}, optimizer=optimizer)
    run.save(model, total, complete=True, meta={...})

A run that computes something costly before its first checkpoint (policy pretrain visits the
states it imitates) keeps it in a Stage folder of OUT, so that --resume can continue even a run
cut before any checkpoint: `run.open_stage()` gives the folder, and the final checkpoint drops it.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import (
    check_run_target,
    checkpoint_json,
    git_commit,
    load_train_state,
    load_weights,
    prepare_run_dir,
    same_run_config,
    save_checkpoint,
)
from ..errors import UpoError
from ..io_utils import JsonlLog, output_lock, read_json, real_dir, recover_dir, write_json
from .distributed import process_rank


@contextlib.contextmanager
def claim_run_dir(out: str | Path) -> Iterator[Path]:
    """What a training command holds for its whole run: its --out, ready to train in.

    A symlink is resolved once, here: the run writes into the directory it points to, and the
    link stays a link. The directory is refused when it cannot be a run's (check_run_target),
    then locked (output_lock, the lock `upo eval --json` takes): a second upo run on it would
    interleave metrics.jsonl and overwrite the first one's checkpoints, so it is refused at
    once. Under the lock, what a killed checkpoint write left is finished (recover_dir) before
    the trainer looks at the directory. With several processes (torchrun / accelerate) all run
    the command and process 0 alone writes OUT, so it alone locks and recovers.
    """
    out_dir = real_dir(out)
    check_run_target(out_dir)
    main = process_rank() == 0
    with output_lock(out_dir if main else None):
        if main:
            recover_dir(out_dir)
        yield out_dir


# How messages name what a stage's work was computed from (Stage.provenance keys).
PROVENANCE_NAMES = {"mdm_fingerprint": "MDM", "train_data_digest": "training data"}


@dataclass
class Stage:
    """Work a run does before its first checkpoint, kept in OUT/folder so that --resume reuses
    it even when the run was cut before any checkpoint. folder/run.json records the run's
    settings and `provenance` (what the stored work was computed from: the MDM's fingerprint,
    the training data's digest), which a resume must find unchanged."""

    folder: str
    holds: str  # what the folder holds, for messages: "the states"
    provenance: dict = field(default_factory=dict)


@dataclass
class Run:
    """One training run's directory. `config` is what every checkpoint's config.json holds; its
    "train" entry (the run's settings) must match on --resume. Only the main process writes
    (several processes train one policy under accelerate/torchrun)."""

    out_dir: Path
    kind: str  # meta.json "kind": "mdm", "hf-mdm" or "policy"
    task: str
    command: str
    config: dict
    main: bool = True
    stage: Stage | None = None
    activity: str = "training"  # what the run does, for messages: "pre-training"
    step: int = 0  # steps done before this process started (the resume point)
    state: dict = field(default_factory=dict)  # the rest of train_state.json (seconds, epoch)
    extra: dict = field(default_factory=dict)  # tensors saved beside the optimizer's
    log: JsonlLog | None = None

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        # the code a run is made with: asked of git once, not at every checkpoint
        self.commit = git_commit()

    @property
    def settings(self) -> dict:
        return self.config["train"]

    def prepare(self, resume: bool) -> dict | None:
        """Check that OUT can start (or with `resume`, continue) this run, before anything is
        written. Returns the finished run's meta when it is already complete, else None."""
        if self.stage is None:
            finished = prepare_run_dir(self.out_dir, self.settings, resume)
        else:
            finished = self._prepare_staged(resume)
        if finished is not None:
            if self.stage is not None:  # a kill after the final checkpoint can leave it behind
                shutil.rmtree(self.out_dir / self.stage.folder, ignore_errors=True)
            steps = finished.get("steps")
            print(
                f"{self.out_dir}: {self.activity} already complete ({steps} steps)",
                file=sys.stderr,
            )
        return finished

    def _prepare_staged(self, resume: bool) -> dict | None:
        """prepare for a run with a Stage: one cut before its first checkpoint has only the
        stage's folder to resume from, and what is stored there must be of this run's settings
        and provenance."""
        stage_dir = self.out_dir / self.stage.folder
        if not resume:
            prepare_run_dir(self.out_dir, self.settings, resume)  # refuses a checkpoint in OUT
            if stage_dir.is_dir():
                raise UpoError(
                    f"{self.out_dir}: holds {self.stage.holds} of an interrupted {self.activity}; "
                    "pass --resume or choose another --out"
                )
            return None
        checkpoint_config, run_json = self.out_dir / "config.json", stage_dir / "run.json"
        if checkpoint_config.exists():
            finished = prepare_run_dir(self.out_dir, self.settings, resume)
            if finished is not None:
                return finished
        elif not run_json.is_file():
            raise UpoError(
                f"{self.out_dir}: nothing to resume (no interrupted {self.activity}); run "
                "without --resume"
            )
        was = read_json(run_json) if run_json.is_file() else {}
        if was and not same_run_config(was.get("train") or {}, self.settings):
            raise UpoError(
                f"{self.out_dir}: --resume with a different config than the run was started with"
            )
        if checkpoint_config.exists():  # the checkpoint says what it was trained from too
            saved = read_json(checkpoint_config)
            for key in self.stage.provenance:
                if key in saved:
                    was.setdefault(key, saved[key])
        for key, now in self.stage.provenance.items():
            if key in was and was[key] != now:
                raise UpoError(
                    f"{self.out_dir}: the {PROVENANCE_NAMES.get(key, key)} changed since the run "
                    "was started; rerun without --resume into another --out"
                )
        return None

    def open_stage(self) -> Path:
        """The stage's folder, made (with its run.json) when this run starts it."""
        stage_dir = self.out_dir / self.stage.folder
        if not stage_dir.is_dir():
            stage_dir.mkdir(parents=True)
            write_json(stage_dir / "run.json", {"train": self.settings, **self.stage.provenance})
        return stage_dir

    @property
    def resumable(self) -> bool:
        return (self.out_dir / "train_state.json").is_file()

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Continue an interrupted run: its last checkpoint's weights and optimizer moments, and
        where it stopped (self.step, self.state, self.extra). Nothing to do for a fresh run."""
        if not self.resumable:
            return
        load_weights(model, self.out_dir / "model.safetensors")
        state, self.extra = load_train_state(self.out_dir, optimizer)
        self.step = int(state["step"])
        self.state = {k: v for k, v in state.items() if k not in ("step", "param_groups")}

    def note_dtype(self, key: str, now: str) -> None:
        """Say so when a resumed run's MDM arithmetic differs from what the run began with: under
        dtype auto that happens when a run moves to a CPU of another kind, and the continuation is
        then close to, but not bit-identical with, an uninterrupted run."""
        was = self.saved("meta.json").get(key) if (self.out_dir / "meta.json").is_file() else None
        if self.main and was is not None and was != now:
            print(
                f"upo: warning: {self.out_dir} ran its MDM in {was}, this run uses {now} "
                f"(pass --dtype {was} to keep it); results will differ slightly from an "
                "uninterrupted run",
                file=sys.stderr,
            )

    def saved(self, name: str) -> dict:
        """A JSON file of the run's last checkpoint (config.json, meta.json)."""
        return checkpoint_json(self.out_dir, name)

    def open_log(self) -> None:
        """metrics.jsonl, without the lines an interrupted run logged after its checkpoint."""
        if self.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.log = JsonlLog(self.out_dir / "metrics.jsonl", truncate_after_step=self.step)

    def write(self, record: dict) -> None:
        if self.log is not None:
            self.log.write(record)

    def meta(self, steps: int, complete: bool, fields: dict) -> dict:
        """meta.json: what every checkpoint says about its making, then the trainer's own fields."""
        return {
            "kind": self.kind,
            "task": self.task,
            "command": self.command,
            "commit": self.commit,
            "steps": steps,
            **fields,
            "complete": complete,
        }

    def save(
        self,
        model: torch.nn.Module,
        steps: int,
        complete: bool,
        meta: dict,
        optimizer: torch.optim.Optimizer | None = None,
        state: dict | None = None,
        extra_tensors: dict | None = None,
    ) -> dict:
        """Write a checkpoint atomically. An unfinished run also saves what --resume needs (the
        optimizer, the step and `state`, `extra_tensors`); the final checkpoint drops them."""
        full = self.meta(steps, complete, meta)
        if not self.main:
            return full
        if complete:
            save_checkpoint(self.out_dir, model, self.config, full)
            if self.stage is not None:  # large, and only needed to resume
                shutil.rmtree(self.out_dir / self.stage.folder, ignore_errors=True)
        else:
            save_checkpoint(
                self.out_dir,
                model,
                self.config,
                full,
                optimizer=optimizer,
                train_state={"step": steps, **(state or {})},
                extra_tensors=extra_tensors,
            )
        return full
