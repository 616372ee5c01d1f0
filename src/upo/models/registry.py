"""Loading an MDM checkpoint directory as a Denoiser."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_weights, read_json
from ..config import from_dict
from ..errors import UpoError
from .tiny import TinyConfig, TinyMDM


def load_mdm(path: str | Path, threads: int | None = None) -> TinyMDM:
    path = Path(path)
    if not path.is_dir():
        raise UpoError(f"{path}: MDM checkpoint directory not found")
    cfg_json = read_json(path / "config.json")
    kind = cfg_json.get("kind", "tiny")
    if kind != "tiny":
        raise UpoError(f"{path}: unknown MDM kind {kind!r} (expected 'tiny')")
    model_cfg = from_dict(TinyConfig, cfg_json.get("model", {}), f"{path / 'config.json'}: model")
    model = TinyMDM(model_cfg)
    load_weights(model, path / "model.safetensors")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.task = cfg_json.get("task")
    if threads:
        torch.set_num_threads(threads)
    return model
