"""Work kept on disk chunk by chunk, so that an interrupted run redoes only the missing chunks.

A chunk is a dict of tensors saved as one safetensors file, together with the random generator's
state after it and the seconds it took. Taking a stored chunk sets the generator to that state, so
the chunks after it draw exactly the numbers an uninterrupted run would have drawn. Used by
`upo eval --resume` (decoded batches) and `upo policy pretrain --resume` (visited states).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UpoError
from .io_utils import os_reason

RESERVED = ("generator_state", "seconds")


def stored_or_computed(
    path: Path, generator: torch.Generator, compute: Callable[[], dict[str, torch.Tensor]]
) -> tuple[dict[str, torch.Tensor], float]:
    """(tensors, seconds reused): the chunk stored at `path`, with `generator` set to where it
    left it; or compute()'s tensors, which are then stored (seconds reused 0)."""
    if path.is_file():
        try:
            stored = load_file(str(path))
        except (SafetensorError, OSError):
            stored = None  # a file cut short by a kill: compute the chunk again
        if stored is not None:
            generator.set_state(stored.pop("generator_state").to(generator.get_state().device))
            seconds = float(stored.pop("seconds"))
            return stored, seconds
    start = time.perf_counter()
    tensors = compute()
    if any(name in tensors for name in RESERVED):
        raise ValueError(f"chunk tensors may not be called {RESERVED}")
    on_disk = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    on_disk["generator_state"] = generator.get_state().cpu()
    on_disk["seconds"] = torch.tensor(time.perf_counter() - start, dtype=torch.float64)
    store(on_disk, path)
    return tensors, 0.0


def store(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Save a chunk through a temporary and a rename, so that a kill leaves it whole or absent.
    A failed save (disk full) removes the temporary and is one UpoError naming the chunk; the
    chunks stored before it stay for --resume."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
    except (SafetensorError, OSError) as err:
        tmp.unlink(missing_ok=True)
        raise UpoError(f"{path}: cannot write ({os_reason(err)})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
