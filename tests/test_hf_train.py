"""`upo mdm train-hf` on LLaDA's real code at toy size: what it masks, exact --resume, the
exported Hugging Face directory, and refusing remote code it was not allowed to run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from reference_models import require_reference_models
from upo.errors import UpoError
from upo.models.hf import HFDenoiser
from upo.tasks.registry import get_task
from upo.training.hf_mdm import HFMDMTrainConfig, build_model, masked_batch, train_hf_mdm


def config(tmp_path, **changes) -> HFMDMTrainConfig:
    code = require_reference_models() / "llada"
    data = tmp_path / "train.jsonl"
    if not data.exists():
        test_file = Path(__file__).resolve().parents[1] / "data" / "sudoku4-test.jsonl"
        rows = [json.loads(line) for line in test_file.read_text().splitlines()][:40]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = dict(
        model_code=str(code),
        trust_remote_code=True,
        task_options={"instructions": "Fill in."},
        train_data=str(data),
        steps=4,
        batch_size=4,
        warmup_steps=1,
        checkpoint_every=2,
        log_every=1,
        threads=1,
    )
    return HFMDMTrainConfig(**{**settings, **changes})


def test_masks_only_blanks_and_keeps_one_per_row(tmp_path):
    cfg = config(tmp_path, t_min=0.0, t_max=0.05)  # low rates: most rows would keep no mask
    model, tokenizer, mask_id = build_model(cfg)
    view = SimpleNamespace(tokenizer=tokenizer, mask_id=mask_id, eos_ids=[])
    task = get_task("sudoku4-paper", cfg.task_options).bind(view)
    batch = task.load(cfg.train_data)
    gen = torch.Generator().manual_seed(0)
    inputs, targets, loss_mask = masked_batch(batch.tokens, task.filled(batch), mask_id, gen, cfg)
    blanks = torch.from_numpy(batch.tokens) == mask_id
    assert (loss_mask <= blanks).all() and loss_mask.any(1).all()
    assert (inputs[loss_mask] == mask_id).all()
    assert (inputs[~loss_mask] == targets[~loss_mask]).all()
    assert not (targets == mask_id).any()  # every blank's target is its digit


def test_resume_ends_bit_identical_and_exports_a_loadable_model(tmp_path, monkeypatch):
    import upo.training.hf_mdm as hf_train

    straight = train_hf_mdm(config(tmp_path), tmp_path / "straight")
    assert straight["complete"] and straight["steps"] == 4
    calls = {"n": 0}
    loss = hf_train.masked_loss

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 4:  # after the checkpoint at step 2, during step 4
            raise KeyboardInterrupt
        return loss(*args)

    monkeypatch.setattr(hf_train, "masked_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_hf_mdm(config(tmp_path), tmp_path / "resumed")
    monkeypatch.setattr(hf_train, "masked_loss", loss)
    with pytest.raises(UpoError, match="already holds a checkpoint"):
        train_hf_mdm(config(tmp_path), tmp_path / "resumed")
    train_hf_mdm(config(tmp_path), tmp_path / "resumed", resume=True)
    a = HFDenoiser.from_pretrained(tmp_path / "straight" / "model", trust_remote_code=True)
    b = HFDenoiser.from_pretrained(tmp_path / "resumed" / "model", trust_remote_code=True)
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), name
    assert a.convention == "llada" and a.tokenizer is not None and a.padding_exact
    log = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in log]
    assert steps == [1, 2, 3, 4]


def test_refuses_remote_code_unless_allowed(tmp_path):
    with pytest.raises(UpoError, match="trust_remote_code: true"):
        build_model(config(tmp_path, trust_remote_code=False))
    with pytest.raises(UpoError, match="no setting 'd_modle'"):
        build_model(config(tmp_path, model={"d_modle": 8}))
