"""Checkpoint directories: config.json + model.safetensors + meta.json, written atomically.

Training state for --resume (optimizer moments, step, RNG) lives beside them in
train_state.safetensors + train_state.json. Nothing is ever pickled.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UpoError
from .io_utils import fresh_tmp_dir, recover_dir, replace_dir, usual_mode, write_json

CHECKPOINT_FILES = frozenset(
    {"config.json", "model.safetensors", "meta.json", "train_state.safetensors", "train_state.json"}
)


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
    """Write the whole directory to a temporary sibling, then swap it into place."""
    out_dir = Path(out_dir)
    tmp = fresh_tmp_dir(out_dir)
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        write_json(tmp / "config.json", config)
        write_json(tmp / "meta.json", meta)
        if optimizer is not None:
            tensors, groups = _optimizer_tensors(optimizer)
            tensors.update(extra_tensors or {})
            save_file(tensors, str(tmp / "train_state.safetensors"))
            write_json(tmp / "train_state.json", {**(train_state or {}), **groups})
        mode = usual_mode()
        for written in tmp.iterdir():  # on disk before the directory swap makes them current
            written.chmod(mode)  # safetensors writes its files private (0600)
            with open(written, "rb") as f:
                os.fsync(f.fileno())
        replace_dir(tmp, out_dir, owned=CHECKPOINT_FILES)
    except BaseException:
        # Interrupted part-way (Ctrl-C, disk full): put the last complete checkpoint and the
        # logs already moved into `tmp` back in place, then drop `tmp`.
        recover_dir(out_dir, CHECKPOINT_FILES)
        raise


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise UpoError(f"{path.parent}: not a checkpoint ({path.name} is missing)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UpoError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError as err:
        raise UpoError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    if not isinstance(data, dict):
        raise UpoError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UpoError(f"{path.parent}: not a checkpoint ({path.name} is missing)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UpoError(f"{path}: unreadable or truncated safetensors file ({err})") from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    tensors = read_tensors(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        name = (missing or unexpected)[0]
        what = "is missing" if missing else "is not part of this model"
        raise UpoError(f"{path}: weight {name!r} {what}")
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise UpoError(
                f"{path}: weight {name!r} has shape {tuple(t.shape)}, "
                f"config says {tuple(expected[name].shape)}"
            )
    model.load_state_dict(tensors)


def load_train_state(ckpt_dir: Path, optimizer) -> tuple[dict, dict]:
    """Restore optimizer moments; return (train_state json, extra tensors such as RNG state)."""
    tensors = read_tensors(ckpt_dir / "train_state.safetensors")
    state = read_json(ckpt_dir / "train_state.json")
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
    recover_dir(out_dir, CHECKPOINT_FILES)
    if not resume:
        if (out_dir / "model.safetensors").exists():
            raise UpoError(
                f"{out_dir}: already holds a checkpoint; pass --resume or choose another --out"
            )
        return None
    if not (out_dir / "train_state.json").exists():
        meta = read_json(out_dir / "meta.json") if (out_dir / "meta.json").exists() else {}
        if meta.get("complete"):
            return meta
        raise UpoError(f"{out_dir}: nothing to resume (no train_state.json); run without --resume")
    saved = read_json(out_dir / "config.json").get("train") or {}
    if not same_run_config(saved, train_config):
        raise UpoError(f"{out_dir}: --resume with a different config than the run was started with")
    return None


def same_run_config(saved: dict, train_config: dict) -> bool:
    """Whether a resumed run's config is the one it was started with. The thread count changes
    speed, not the run: it may differ."""

    def without_threads(config: dict) -> dict:
        return {k: v for k, v in config.items() if k != "threads"}

    return without_threads(saved) == without_threads(train_config)
