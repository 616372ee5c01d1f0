"""Resumable evaluation: each finished batch of `upo eval` is kept on disk until the run ends.

`upo eval --json OUT` keeps the batches it has decoded in `OUT.partial/`: one safetensors file
per batch, with the batch's outputs, orders, NFE, log-likelihoods, the seconds it took and the
random generator's state after it. `--resume` reuses those batches and restores the generator, so
a resumed evaluation gives exactly the results of an uninterrupted one (stochastic policies too),
decoding only the batches that were missing. The settings that determine the results are stored
beside them, and a resume with other settings is refused. The folder goes once OUT is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from .errors import SettingError, UpoError
from .io_utils import read_json, write_json
from .stored_chunks import stored_or_computed

ARRAYS = ("outputs", "order", "nfe", "loglik")


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
                listed = ", ".join(changed)
                raise SettingError(
                    lambda name: (
                        f"{name('resume')} with different settings ({listed}) than "
                        f"the interrupted evaluation in {self.folder}; rerun without {name('resume')}"
                    )
                )
        else:
            # A fresh run decodes everything itself: batches an earlier run left here (other
            # settings, or the same) are removed first, and a removal that fails stops the run
            # rather than letting a stale batch through. The caller holds OUT.lock, so no other
            # run is writing here meanwhile.
            remove_path(self.folder)
            self.folder.mkdir(parents=True)
            write_json(saved, settings)

    def decode(self, key: str, generator: torch.Generator, run_batch) -> tuple:
        """The arrays of batch `key`: stored ones (and the generator set to where that batch
        left it), or run_batch()'s, which are then stored."""

        def compute() -> dict[str, torch.Tensor]:
            arrays = run_batch()
            return {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in zip(ARRAYS, arrays)}

        path = self.folder / f"{key}.safetensors"
        tensors, reused = stored_or_computed(path, generator, compute)
        self.seconds_reused += reused
        return tuple(tensors[name].numpy() for name in ARRAYS)

    def finish(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def remove_path(path: Path) -> None:
    """Remove whatever is at `path` (a folder, a file or a link), or nothing; errors propagate."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
