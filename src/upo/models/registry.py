"""Loading an MDM checkpoint directory as a Denoiser."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from ..assets import find as find_shipped
from ..assets import hint as shipped_hint
from ..checkpoint import (
    check_shapes,
    checkpoint_json,
    expected_shapes,
    load_weights,
    read_weight_shapes,
)
from ..config import from_dict
from ..errors import UpoError
from ..io_utils import read_json
from .hf import HF_OPTIONS, HFDenoiser
from .precision import DTYPES, dtype_reason, resolve_dtype
from .tiny import TinyConfig, TinyMDM

# The built-in MDM's one option. "auto" runs it as trained (bf16 matmuls by default) where bf16 is
# native, and in float32 on a CPU that would only emulate bf16 (about 60x slower there, issue 29;
# see upo.models.precision). "float32" also makes the arithmetic independent of the batch shape
# (docs/results section 1, "Batch size and bf16 rounding").
TINY_DTYPES = DTYPES


# A Hub id as transformers spells one: "owner/name" (no other slashes).
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def hf_source(path: str | Path) -> str | None:
    """What transformers loads when `path` names a Hugging Face model, else None (upo's own
    checkpoint): `hf:` + a Hub id or directory; a directory holding a transformers config.json
    (no upo `kind`); or a Hub id (owner/name) that is no local path and whose owner is no local
    directory. The CLI and the Python API both read names through this, so
    `GSAI-ML/LLaDA-8B-Instruct` and `hf:GSAI-ML/...` are one. `runs/my-mdm` where `runs/` exists
    but `runs/my-mdm` does not is a missing local checkpoint (a typo, or a command run from
    another directory), not a download from the Hub; `hf:runs/my-mdm` forces the Hub."""
    text = str(path)
    if text.startswith("hf:"):
        return text.removeprefix("hf:")
    config = Path(text) / "config.json"
    if config.is_file():
        try:
            data = read_json(config)
        except UpoError:
            return None
        hf = "kind" not in data and ("model_type" in data or "architectures" in data)
        return text if hf else None
    hub_shaped = HUB_ID.match(text) and not Path(text).exists()
    return text if hub_shaped and not Path(text).parent.is_dir() else None


def is_hf_model(path: str | Path) -> bool:
    return hf_source(path) is not None


def check_hf_options(options: dict) -> None:
    """Every option that reaches from_pretrained has its exact type: a quoted "false" (a
    non-empty string, so truthy) must never turn trust_remote_code on, nor a 1 stand for true."""
    unknown = sorted(set(options) - set(HF_OPTIONS), key=repr)
    if unknown:
        raise UpoError(f"unknown MDM option {unknown[0]!r:.40}; valid: {', '.join(HF_OPTIONS)}")
    for name, value in options.items():
        types = HF_OPTIONS[name]
        bad_bool = isinstance(value, bool) and bool not in types  # True is an int in Python
        if bad_bool or not isinstance(value, types):
            wanted = (
                "true or false"
                if types == (bool,)
                else " or ".join("null" if t is type(None) else t.__name__ for t in types)
            )
            raise UpoError(f"MDM option {name} must be {wanted}, got {value!r:.40}")


def load_mdm(path: str | Path, threads: int | None = None, options: dict | None = None):
    """A Denoiser: upo's own MDM checkpoint (a directory, or a shipped one by name such as
    `sudoku9-mdm`; a local directory of that name wins), or a Hugging Face model (a Hub id or a
    transformers directory, `hf:` before either accepted) loaded with `options` (trust_remote_code,
    dtype, device, mask_id, convention, confidence, allow_unpadded_batching: see
    upo.models.hf.HFDenoiser.from_pretrained). upo's own MDM takes dtype: auto (as trained where
    bf16 is native, else float32; see upo.models.precision), bfloat16 or float32 (a torch dtype
    too), and device cpu. The dtype used is `model.dtype_used`. The one loader behind
    upo.load_mdm, every command and the lm-eval model."""
    if threads:
        torch.set_num_threads(threads)
    path = find_shipped(str(path), "checkpoints")  # a shipped MDM by name: `sudoku9-mdm`
    source = hf_source(path)
    if source is not None:
        check_hf_options(options or {})
        return HFDenoiser.from_pretrained(source, **(options or {}))
    options = dict(options or {})
    dtype = str(options.pop("dtype", None) or "auto").removeprefix("torch.")
    device = options.pop("device", None)
    if options:
        raise UpoError(
            f"{path}: {sorted(options)[0]} is for Hugging Face models (upo's own MDM takes dtype)"
        )
    if device is not None and torch.device(device).type != "cpu":
        raise UpoError(
            f"{path}: device {str(device)!r}: upo's own MDMs run on the CPU, not {device}"
        )
    if dtype not in TINY_DTYPES:
        raise UpoError(
            f"unknown dtype {dtype!r} for upo's own MDM; valid: {', '.join(TINY_DTYPES)}"
        )
    path = Path(path)
    if not path.is_dir():
        hub = (
            f"{path.parent}/ is a local directory, so this is read as a path; for the Hub id "
            f"write hf:{path}"
            if HUB_ID.match(str(path)) and path.parent.is_dir()
            else "a Hub id is written owner/name, or hf:ID"
        )
        raise UpoError(
            f"{path}: MDM checkpoint directory not found ({hub})"
            f"{shipped_hint(str(path), 'checkpoints', '-mdm')}"
        )
    cfg_json = checkpoint_json(path, "config.json")
    kind = cfg_json.get("kind", "tiny")
    if kind != "tiny":
        raise UpoError(f"{path}: unknown MDM kind {kind!r} (expected 'tiny')")
    model_cfg = from_dict(TinyConfig, cfg_json.get("model", {}), f"{path / 'config.json'}: model")
    trained_bf16 = model_cfg.bf16
    used = tiny_dtype(dtype, trained_bf16)
    model_cfg.bf16 = used == "bfloat16"
    check_tiny_weights(path / "model.safetensors", model_cfg, f"{path / 'config.json'}: model")
    model = TinyMDM(model_cfg)
    load_weights(model, path / "model.safetensors")
    model.freeze_for_inference()
    # Said where a command reports its results (the eval table's header, JSON, meta.json), not
    # on stderr at load: a bad input found after loading must still be one line.
    model.dtype_note = f"{used}: {reason_for(used, dtype, trained_bf16)}"
    if threads:
        torch.set_num_threads(threads)
    return model


def check_mdm_task(path: str | Path, task: str) -> None:
    """Refuse an MDM checkpoint trained for another task. The task is the checkpoint's metadata
    (config.json), not the model's: a Hugging Face MDM serves any text task and names none."""
    path = find_shipped(path, "checkpoints")
    if is_hf_model(path):
        return
    trained_for = checkpoint_json(Path(path), "config.json").get("task")
    if trained_for not in (None, task):
        raise UpoError(f"{path}: MDM was trained for task {trained_for}, this run is {task}")


def tiny_dtype(requested: str, trained_bf16: bool) -> str:
    """The dtype upo's own MDM runs in. A checkpoint trained in float32 stays in float32 under
    "auto": bf16 is a speed-up for models trained with it, never a change of model."""
    if requested == "auto" and not trained_bf16:
        return "float32"
    return resolve_dtype(requested, "cpu")  # the built-in MDM always runs on the CPU


def reason_for(used: str, requested: str, trained_bf16: bool) -> str:
    if requested == "auto" and not trained_bf16:
        return "as trained"
    return dtype_reason(used, requested)


def check_tiny_weights(weights: Path, cfg: TinyConfig, where: str) -> None:
    """Refuse a config that does not describe exactly the tensors in `weights`, before building
    the model: sizes come from config.json, and an absurd one would allocate until memory ran out.

    The comparison builds the model without its weights (meta tensors), but even that costs time
    and memory per layer. Every layer adds the same tensors, so two shallow builds tell how many
    tensors `n_layers` layers make. A build proportional to the file's own tensor count is fine
    (it then names the first tensor that differs); a config asking for far more is refused first.
    """
    stored = read_weight_shapes(weights)
    two, three = (
        len(expected_shapes(lambda n=n: TinyMDM(dataclasses.replace(cfg, n_layers=n)), where))
        for n in (2, 3)
    )
    implied = two + (cfg.n_layers - 2) * (three - two)
    if implied > 2 * max(len(stored), two):
        raise UpoError(
            f"{weights}: holds {len(stored)} tensors, but config.json's {cfg.n_layers} layers "
            f"make {implied}"
        )
    check_shapes(weights, expected_shapes(lambda: TinyMDM(cfg), where), stored)
