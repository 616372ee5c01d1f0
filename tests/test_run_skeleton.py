"""The run skeleton the trainers share (upo.training.run.Run): start, resume, log, checkpoint."""

from __future__ import annotations

import pytest
import torch

from upo.checkpoint import same_run_config
from upo.errors import UpoError
from upo.io_utils import read_json, read_jsonl
from upo.training.run import Run


def make_run(out, main: bool = True, steps: int = 3) -> Run:
    config = {"kind": "test", "train": {"lr": 0.1, "steps": steps, "threads": 1}}
    return Run(out, kind="mdm", task="sudoku4", command="upo test", config=config, main=main)


def model_and_optimizer(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def train_step(model, opt, x: float) -> None:
    opt.zero_grad()
    model(torch.full((1, 3), x)).sum().backward()
    opt.step()


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "run"
    run = make_run(out)
    assert run.prepare(resume=False) is None
    model, opt = model_and_optimizer()
    run.open_log()
    gen = torch.Generator().manual_seed(5)
    for step in range(2):
        train_step(model, opt, float(step))
        run.write({"step": step + 1, "loss": float(step)})
    extra = {"rng": gen.get_state()}
    run.save(model, 2, False, {"seconds": 1.5}, opt, {"elapsed": 1.5}, extra)
    run.write({"step": 3, "loss": 9.0})  # logged after the checkpoint: dropped on resume

    resumed = make_run(out)
    assert resumed.prepare(resume=True) is None
    model2, opt2 = model_and_optimizer(seed=1)  # other weights: restore must overwrite them
    resumed.restore(model2, opt2)
    assert resumed.step == 2 and resumed.state == {"elapsed": 1.5}
    assert torch.equal(resumed.extra["rng"], gen.get_state())
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    # the optimizer moments came back too: one more step lands on the same weights
    train_step(model, opt, 2.0)
    train_step(model2, opt2, 2.0)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    resumed.open_log()
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]

    final = resumed.save(model2, 3, True, {"seconds": 2.0})
    meta = read_json(out / "meta.json")
    assert meta == final
    assert meta["kind"] == "mdm" and meta["task"] == "sudoku4" and meta["command"] == "upo test"
    assert meta["steps"] == 3 and meta["complete"] is True and meta["seconds"] == 2.0
    assert not (out / "train_state.json").exists()  # a finished run keeps no resume state
    assert make_run(out).prepare(resume=True) == meta  # already complete: nothing to do


def test_prepare_refuses_what_it_cannot_continue(tmp_path):
    out = tmp_path / "run"
    run = make_run(out)
    model, opt = model_and_optimizer()
    run.save(model, 1, False, {}, opt)
    with pytest.raises(UpoError, match="already holds a checkpoint"):
        make_run(out).prepare(resume=False)
    with pytest.raises(UpoError, match="different config"):
        make_run(out, steps=9).prepare(resume=True)
    with pytest.raises(UpoError, match="nothing to resume"):
        make_run(tmp_path / "empty").prepare(resume=True)


def test_only_the_main_process_writes(tmp_path):
    out = tmp_path / "run"
    run = make_run(out, main=False)
    model, opt = model_and_optimizer()
    run.open_log()
    run.write({"step": 1})
    meta = run.save(model, 1, True, {"x": 1})
    assert meta["complete"] and not out.exists()


def test_a_changed_mdm_dtype_resumes_and_is_said(tmp_path, capsys):
    saved = {"lr": 0.1, "threads": 1, "dtype": "bfloat16", "mdm_options": {"dtype": "auto"}}
    moved = {"lr": 0.1, "threads": 2, "dtype": "float32", "mdm_options": {"dtype": "float32"}}
    assert same_run_config(saved, moved)
    assert not same_run_config(saved, {**moved, "lr": 0.2})
    assert not same_run_config(saved, {**moved, "mdm_options": {"dtype": "auto", "device": "x"}})

    out = tmp_path / "run"
    run = make_run(out)
    model, opt = model_and_optimizer()
    run.save(model, 1, False, {"mdm_dtype": "bfloat16"}, opt)
    run.note_dtype("mdm_dtype", "bfloat16")
    assert capsys.readouterr().err == ""
    run.note_dtype("mdm_dtype", "float32")
    err = capsys.readouterr().err
    assert "bfloat16" in err and "float32" in err and "--dtype bfloat16" in err
    assert len(err.strip().splitlines()) == 1
