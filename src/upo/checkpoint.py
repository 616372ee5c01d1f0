"""Checkpoint directories: config.json + model.safetensors + meta.json, written atomically.

Training state for --resume (optimizer moments, step, RNG) lives beside them in
train_state.safetensors + train_state.json. Nothing is ever pickled.
"""

from __future__ import annotations

import json
import math
import re
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode

from .errors import UpoError
from .io_utils import atomic_dir, os_reason, read_json, recover_dir, write_json

CHECKPOINT_FILES = frozenset(
    {"config.json", "model.safetensors", "meta.json", "train_state.safetensors", "train_state.json"}
)
# Everything a run directory may hold: the checkpoint, its logs, the states `policy pretrain` keeps
# until it completes and the model `mdm train-hf` exports. Anything else means --out names a
# directory that is not a upo run, whose files checkpoint writes must not replace or remove.
RUN_ENTRIES = CHECKPOINT_FILES | {"metrics.jsonl", "tensorboard", "visited", "model"}
# What a kill mid-write leaves beside a run entry: atomic_write_bytes' mkstemp name
# (.metrics.jsonl.k2j4_x9a.tmp) or atomic_dir's mkdtemp one (.model.tmpk2j4_x9a, the Hugging
# Face model `mdm train-hf` exports into OUT/model).
_LEFTOVER_TMP = re.compile(r"^\.(?P<name>.+)\.(\w+\.tmp|tmp\w+)$")

# safetensors' own limit: a longer header is refused by its reader as well.
MAX_HEADER_BYTES = 100_000_000
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt.{pid}.{key}"] = t.contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def _load_optimizer(optimizer, tensors: dict, groups: dict) -> None:
    state: dict = {}
    for name, t in tensors.items():
        if not name.startswith("opt."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = t
    optimizer.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def save_checkpoint(
    out_dir: str | Path,
    model: torch.nn.Module,
    config: dict,
    meta: dict,
    optimizer: torch.optim.Optimizer | None = None,
    train_state: dict | None = None,
    extra_tensors: dict | None = None,
) -> None:
    """Write the checkpoint's files into a temporary sibling, then publish them at `out_dir`
    (io_utils.atomic_dir: a reader always finds a complete checkpoint there, and a kill never
    loses a complete new one)."""
    out_dir = Path(out_dir)
    try:
        with atomic_dir(out_dir, owned=CHECKPOINT_FILES) as tmp:
            state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"))
            write_json(tmp / "config.json", config)
            write_json(tmp / "meta.json", meta)
            if optimizer is not None:
                tensors, groups = _optimizer_tensors(optimizer)
                tensors.update(extra_tensors or {})
                save_file(tensors, str(tmp / "train_state.safetensors"))
                write_json(tmp / "train_state.json", {**(train_state or {}), **groups})
    except (SafetensorError, OSError, UpoError) as err:
        # a full disk, a quota, a permission: one line naming --out, not the temporary
        reason = os_reason(err) if not isinstance(err, UpoError) else str(err).split("(")[-1]
        raise UpoError(
            f"{out_dir}: cannot write a checkpoint ({reason.rstrip(')')}); the last complete "
            "one is kept, --resume continues from it"
        ) from None


def checkpoint_json(ckpt_dir: str | Path, name: str) -> dict:
    """One JSON file of a checkpoint directory (config.json, meta.json, train_state.json)."""
    return read_json(Path(ckpt_dir) / name, f"{ckpt_dir}: not a checkpoint ({name} is missing)")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UpoError(f"{path.parent}: not a checkpoint ({path.name} is missing)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UpoError(f"{path}: unreadable or truncated safetensors file ({err})") from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    tensors = read_tensors(path)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    check_shapes(path, expected, {name: tuple(t.shape) for name, t in tensors.items()})
    check_finite(path, tensors)
    model.load_state_dict(tensors)


def check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse weights holding NaN or inf (a diverged run, a damaged file): a model built from
    them decodes garbage without a word. One pass over the weights, a fraction of loading them."""
    for name in sorted(tensors):
        t = tensors[name]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
            raise UpoError(
                f"{path}: weight {name!r} holds {kind} ({bad} of {t.numel()} values are not "
                "finite); the checkpoint is damaged or its training diverged"
            )


def check_shapes(path: Path, expected: dict[str, tuple], stored: dict[str, tuple]) -> None:
    """Refuse weights that are not exactly the model's, naming the first tensor that differs."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        name = (missing or unexpected)[0]
        what = "is missing" if missing else "is not part of this model"
        raise UpoError(f"{path}: weight {name!r} {what}")
    for name in sorted(stored):
        if stored[name] != expected[name]:
            raise UpoError(
                f"{path}: weight {name!r} has shape {stored[name]}, config says {expected[name]}"
            )


def read_weight_shapes(path: Path) -> dict[str, tuple]:
    """Names and shapes of the tensors in a safetensors file, from its header alone.

    The header is 8 bytes of little-endian length, then that many bytes of JSON. Each entry's
    byte range must lie in the file and fit its dtype and shape, so every shape returned is
    backed by bytes actually on disk: a model that matches them is no larger than the file.
    """
    if not path.is_file():
        raise UpoError(f"{path.parent}: not a checkpoint ({path.name} is missing)")
    bad = f"{path}: unreadable or truncated safetensors file"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size < 8:
                raise UpoError(f"{bad} ({size} bytes)")
            (length,) = struct.unpack("<Q", f.read(8))
            if length > MAX_HEADER_BYTES or 8 + length > size:
                raise UpoError(f"{bad} (header of {length} bytes in a file of {size})")
            raw = f.read(length)
    except OSError as err:
        raise UpoError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included
        raise UpoError(f"{bad} (header is not valid JSON)") from None
    if not isinstance(header, dict):
        raise UpoError(f"{bad} (header is not a JSON object)")
    header.pop("__metadata__", None)
    data_bytes = size - 8 - length
    shapes = {}
    for name, entry in header.items():
        shapes[name] = _entry_shape(entry, data_bytes)
        if shapes[name] is None:
            raise UpoError(f"{bad} (entry {name!r:.80} does not describe bytes in the file)")
    end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if end != data_bytes:
        raise UpoError(f"{bad} (header describes {end} data bytes, the file holds {data_bytes})")
    return shapes


def _entry_shape(entry, data_bytes: int) -> tuple | None:
    """The shape of one header entry; None unless its dtype is known and its byte range lies in
    the data and holds exactly that many elements."""
    if not isinstance(entry, dict) or entry.get("dtype") not in _DTYPE_BYTES:
        return None
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2:
        return None
    if not all(type(v) is int and v >= 0 for v in shape + offsets):  # bool is an int: refuse it
        return None
    begin, end = offsets
    size = math.prod(shape) * _DTYPE_BYTES[entry["dtype"]]
    return tuple(shape) if begin <= end <= data_bytes and end - begin == size else None


class _ParametersOnMeta(TorchFunctionMode):
    """Within it, the constructors layers allocate their weights with make `meta` tensors: shapes
    without memory. torch.tensor stays real, unlike under torch.device("meta"): models turn small
    config lists into index buffers with it and read them (an embedding sized by the largest id)."""

    ALLOCATORS = frozenset(
        {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.arange}
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.ALLOCATORS and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def expected_shapes(build: Callable[[], torch.nn.Module], where: str) -> dict[str, tuple]:
    """The state_dict shapes of the model `build` makes, without allocating its weights."""
    try:
        with _ParametersOnMeta():
            model = build()
    except (RuntimeError, ValueError, OverflowError, MemoryError) as err:
        raise UpoError(
            f"{where}: model cannot be built ({str(err).splitlines()[0]:.200})"
        ) from None
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_weights_fit(path: Path, build: Callable[[], torch.nn.Module], where: str) -> None:
    """Refuse a config that does not describe exactly the weights in `path`, before the model is
    built for real: a config.json that claims huge sizes would otherwise allocate them."""
    stored = read_weight_shapes(path)  # first: a damaged file is refused before any build
    check_shapes(path, expected_shapes(build, where), stored)


def load_train_state(ckpt_dir: Path, optimizer) -> tuple[dict, dict]:
    """Restore optimizer moments; return (train_state json, extra tensors such as RNG state)."""
    tensors = read_tensors(ckpt_dir / "train_state.safetensors")
    state = checkpoint_json(ckpt_dir, "train_state.json")
    if not isinstance(state.get("step"), int) or "param_groups" not in state:
        raise UpoError(f"{ckpt_dir / 'train_state.json'}: no step or optimizer settings in it")
    try:
        _load_optimizer(optimizer, tensors, state)
        for group in optimizer.param_groups:  # load_state_dict does not compare moment shapes
            for p in group["params"]:
                for key, t in optimizer.state.get(p, {}).items():
                    if torch.is_tensor(t) and t.dim() and t.shape != p.shape:
                        raise ValueError(f"{key} has shape {tuple(t.shape)}, not {tuple(p.shape)}")
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise UpoError(
            f"{ckpt_dir}: optimizer state does not fit this model ({str(err).splitlines()[0]})"
        ) from None
    extra = {k: v for k, v in tensors.items() if not k.startswith("opt.")}
    return state, extra


def prepare_run_dir(out_dir: Path, train_config: dict, resume: bool) -> dict | None:
    """Check that `out_dir` can start (or, with `resume`, continue) a run of `train_config`.

    Returns the finished run's meta.json when it is already complete (nothing left to do), None
    when training should go ahead; raises UpoError for a directory that cannot be used.
    """
    out_dir = Path(out_dir)
    check_run_target(out_dir)  # before recover_dir, which moves and removes files
    recover_dir(out_dir)
    if not resume:
        if (out_dir / "model.safetensors").exists():
            raise UpoError(
                f"{out_dir}: already holds a checkpoint; pass --resume or choose another --out"
            )
        return None
    if not (out_dir / "train_state.json").exists():
        meta = checkpoint_json(out_dir, "meta.json") if (out_dir / "meta.json").exists() else {}
        if meta.get("complete"):
            # "already complete" only for the config it completed: another one (more steps, say)
            # would otherwise look done without having run.
            check_same_config(out_dir, train_config)
            return meta
        raise UpoError(f"{out_dir}: nothing to resume (no train_state.json); run without --resume")
    check_same_config(out_dir, train_config)
    return None


def check_same_config(out_dir: Path, train_config: dict) -> None:
    saved = checkpoint_json(out_dir, "config.json").get("train") or {}
    if not same_run_config(saved, train_config):
        raise UpoError(f"{out_dir}: --resume with a different config than the run was started with")


def check_run_target(out_dir: Path) -> None:
    """Refuse an --out that is not a run directory: checkpoint writes replace and remove the
    checkpoint's files in it and put temporaries beside it, which must never happen in the
    current directory, one above it, the home directory, or a directory holding anything but a
    upo run."""
    resolved = out_dir.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise UpoError(f"--out {out_dir}: is the current directory or one above it; name a new one")
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):  # no HOME and no password entry: nothing to compare
        home = None
    if resolved == home:
        raise UpoError(f"--out {out_dir}: is your home directory; name a new one")
    if not out_dir.is_dir():
        return
    try:
        names = sorted(entry.name for entry in out_dir.iterdir())
    except OSError as err:
        raise UpoError(f"--out {out_dir}: cannot list ({err.strerror or err})") from None
    for name in names:
        leftover = _LEFTOVER_TMP.match(name)
        if name not in RUN_ENTRIES and not (leftover and leftover["name"] in RUN_ENTRIES):
            raise UpoError(
                f"--out {out_dir}: holds {name!r:.80}, which is not part of a upo run; "
                "name a new or empty directory"
            )


def same_run_config(saved: dict, train_config: dict) -> bool:
    """Whether a resumed run's config is the one it was started with. The thread count changes
    speed, not the run: it may differ. So may the MDM's dtype (`dtype`, `mdm_options.dtype`):
    under dtype auto it follows the CPU, and a run moved to another machine must still resume;
    the trainers say when it changed (Run.note_dtype)."""

    def settings(config: dict) -> dict:
        kept = {k: v for k, v in config.items() if k not in ("threads", "dtype")}
        options = kept.get("mdm_options")
        if isinstance(options, dict):
            kept["mdm_options"] = {k: v for k, v in options.items() if k != "dtype"}
        return kept

    return settings(saved) == settings(train_config)
