"""Resumable evaluation: each finished batch of `upo eval` is kept on disk until the run ends.

`upo eval --json OUT` keeps the batches it has decoded in `OUT.partial/`: one safetensors file
per batch, with the batch's outputs, orders, NFE, log-likelihoods, the seconds it took and the
random generator's state after it. `--resume` reuses those batches and restores the generator, so
a resumed evaluation gives exactly the results of an uninterrupted one (stochastic policies too),
decoding only the batches that were missing. The settings that determine the results are stored
beside them, and a resume with other settings is refused. The folder goes once OUT is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .checkpoint import read_json
from .errors import UpoError
from .io_utils import write_json

ARRAYS = ("outputs", "order", "nfe", "loglik")


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (the data file and policy weights a result depends on)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class EvalProgress:
    """The finished batches of one `upo eval` run, in `folder`."""

    def __init__(self, folder: str | Path, settings: dict, resume: bool):
        self.folder = Path(folder)
        self.seconds_reused = 0.0  # decode seconds of the batches taken from an earlier run
        saved = self.folder / "settings.json"
        if resume:
            if not saved.is_file():
                raise UpoError(f"{self.folder}: nothing to resume (no interrupted evaluation)")
            was = read_json(saved)
            changed = sorted(k for k in set(was) | set(settings) if was.get(k) != settings.get(k))
            if changed:
                raise UpoError(
                    f"--resume with different settings ({', '.join(changed)}) than the "
                    f"interrupted evaluation in {self.folder}; rerun without --resume"
                )
        else:
            # A fresh run: batches of an earlier, interrupted one are not reused.
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            write_json(saved, settings)

    def decode(self, key: str, generator: torch.Generator, run_batch) -> tuple:
        """The arrays of batch `key`: stored ones (and the generator set to where that batch
        left it), or run_batch()'s, which are then stored."""
        path = self.folder / f"{key}.safetensors"
        if path.is_file():
            try:
                stored = load_file(str(path))
            except (SafetensorError, OSError):
                stored = None  # a batch file cut short by a kill: decode the batch again
            if stored is not None:
                generator.set_state(stored["generator_state"].to(generator.get_state().device))
                self.seconds_reused += float(stored["seconds"])
                return tuple(stored[name].numpy() for name in ARRAYS)
        start = time.perf_counter()
        arrays = run_batch()
        tensors = {
            name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in zip(ARRAYS, arrays)
        }
        tensors["generator_state"] = generator.get_state().cpu()
        tensors["seconds"] = torch.tensor(time.perf_counter() - start, dtype=torch.float64)
        tmp = self.folder / f".{key}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, path)  # a kill leaves the batch whole or absent
        return arrays

    def finish(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
