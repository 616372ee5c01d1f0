"""`upo policy pretrain --resume`: a run cut short while it visits states or between epochs ends
with exactly the policy, metrics and meta of an uninterrupted run, redoing only what was missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import upo.rl.pretrain as pretrain_module
from test_reliability import (
    Interrupt,
    assert_clean_run_dir,
    interrupt_at,
    pretrain_config,
    read_jsonl,
    run_cli,
    same_weights,
    start_and_kill,
    write_mdm,
    write_puzzles,
    write_yaml,
)
from upo.config import from_dict
from upo.errors import UpoError
from upo.io_utils import recover_dir
from upo.rl.pretrain import VISITED, PretrainConfig, pretrain_policy

# A stochastic visitor, so that a resumed visit is right only if the generator state is restored;
# 130 training puzzles make two chunks of 128 and 2.
SAMPLED = {
    "reference": "softmax:0.5",
    "decode_with": "softmax:0.5",
    "n_puzzles": 130,
    "held_out": 4,
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain-resume")
    return {
        "root": root,
        "mdm": write_mdm(root / "mdm", seed=0),
        "data": write_puzzles(root / "train.jsonl", n=140),
    }


def config(files, **overrides) -> PretrainConfig:
    settings = {"mdm": files["mdm"], "train_data": files["data"], **SAMPLED, **overrides}
    mdm, train_data = settings.pop("mdm"), settings.pop("train_data")
    data = pretrain_config(mdm, train_data, **settings)
    return from_dict(PretrainConfig, data, "test")


@pytest.fixture(scope="module")
def uninterrupted(files):
    """The reference run of each config the tests interrupt, keyed by epochs."""
    runs = {}
    for epochs in (1, 3):
        out = files["root"] / f"full-{epochs}"
        meta = pretrain_policy(config(files, epochs=epochs), out)
        runs[epochs] = (out, meta)
    return runs


def assert_same_run(run: Path, full: Path) -> None:
    same_weights(full, run)
    assert_clean_run_dir(run)
    assert not (run / VISITED).exists()
    keys = ("step", "epoch", "train_loss", "held_out_agreement", "held_out_ce")
    cut, whole = read_jsonl(run / "metrics.jsonl"), read_jsonl(full / "metrics.jsonl")
    assert [[m[k] for k in keys] for m in cut] == [[m[k] for k in keys] for m in whole]
    meta, full_meta = (json.loads((d / "meta.json").read_text()) for d in (run, full))
    drop = ("seconds", "command", "commit")
    assert {k: v for k, v in meta.items() if k not in drop} == {
        k: v for k, v in full_meta.items() if k not in drop
    }


def count_calls(monkeypatch, module, name: str) -> dict:
    real, calls = getattr(module, name), {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


# Chunks: train c0 (128 puzzles), train c1 (2), held c0 (4): three calls of `collect`.
@pytest.mark.parametrize("cut_at_call", [2, 3])
def test_cut_while_visiting_resumes_to_the_uninterrupted_policy(
    tmp_path, files, uninterrupted, monkeypatch, cut_at_call
):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        interrupt_at(m, pretrain_module, "collect", cut_at_call)
        with pytest.raises(Interrupt):
            pretrain_policy(config(files, epochs=3), run)
    stored = sorted(p.name for p in (run / VISITED).glob("*.safetensors"))
    assert len(stored) == cut_at_call - 1
    assert not (run / "config.json").exists()  # cut before the first checkpoint

    with pytest.raises(UpoError, match="interrupted pre-training.*--resume"):
        pretrain_policy(config(files, epochs=3), run)  # a fresh start does not clobber it

    calls = count_calls(monkeypatch, pretrain_module, "collect")
    pretrain_policy(config(files, epochs=3), run, resume=True)
    assert calls["n"] == 3 - (cut_at_call - 1)  # only the missing chunks were visited again
    assert_same_run(run, uninterrupted[3][0])


def test_without_restoring_the_generator_a_resumed_visit_differs(tmp_path, files, monkeypatch):
    """The check above can fail: with the generator state ignored, the chunk after a stored one
    draws other samples (the visitor samples positions), so the states and the policy differ."""
    run, full = tmp_path / "run", tmp_path / "full"
    pretrain_policy(config(files), full)
    with monkeypatch.context() as m:
        interrupt_at(m, pretrain_module, "collect", 2)
        with pytest.raises(Interrupt):
            pretrain_policy(config(files), run)
    real = pretrain_module.stored_or_computed

    def ignoring_generator_state(path, generator, compute):
        before = generator.get_state()
        tensors, reused = real(path, generator, compute)
        generator.set_state(before)  # as if the stored chunk had not said where it left it
        return tensors, reused

    monkeypatch.setattr(pretrain_module, "stored_or_computed", ignoring_generator_state)
    pretrain_policy(config(files), run, resume=True)
    a, b = (load_file(str(d / "model.safetensors")) for d in (run, full))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_cut_between_epochs_resumes_from_the_last_epoch(
    tmp_path, files, uninterrupted, monkeypatch
):
    run = tmp_path / "run"
    cfg = config(files, epochs=3)
    steps_per_epoch = read_jsonl(uninterrupted[3][0] / "metrics.jsonl")[0]["step"]
    with monkeypatch.context() as m:
        # the second epoch's first loss: epoch 1 is checkpointed, epoch 2 is lost
        interrupt_at(m, pretrain_module, "pretrain_loss", steps_per_epoch + 1)
        with pytest.raises(Interrupt):
            pretrain_policy(cfg, run)
    state = json.loads((run / "train_state.json").read_text())
    assert state["epoch"] == 1 and state["step"] == steps_per_epoch
    assert not json.loads((run / "meta.json").read_text())["complete"]
    assert (run / VISITED).is_dir()

    losses = count_calls(monkeypatch, pretrain_module, "pretrain_loss")
    visits = count_calls(monkeypatch, pretrain_module, "collect")
    pretrain_policy(cfg, run, resume=True)
    assert visits["n"] == 0  # all states came from disk
    assert losses["n"] == 2 * steps_per_epoch  # epochs 2 and 3 only
    assert_same_run(run, uninterrupted[3][0])


def test_sigkill_and_cli_resume(tmp_path, files, uninterrupted):
    """The real command, killed after its first epoch checkpoint, then `--resume`."""
    data = pretrain_config(files["mdm"], files["data"], **SAMPLED, epochs=40)
    config_path = write_yaml(tmp_path / "pre.yaml", data)
    run = tmp_path / "run"
    start_and_kill(["policy", "pretrain", "--config", config_path, "--out", run], run, tmp_path)
    # A kill inside a checkpoint's publication leaves a sealed temporary beside the run that the
    # resume moves in first (io_utils.recover_dir): read the epoch the resume will see.
    recover_dir(run)
    epoch = json.loads((run / "train_state.json").read_text())["epoch"]
    assert 0 < epoch < 40
    resumed = run_cli(
        "policy", "pretrain", "--config", config_path, "--out", run, "--resume", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming after epoch {epoch}" in resumed.stderr
    full = tmp_path / "full"
    pretrain_policy(from_dict(PretrainConfig, data, "test"), full)
    assert_same_run(run, full)
    again = run_cli(
        "policy", "pretrain", "--config", config_path, "--out", run, "--resume", cwd=tmp_path
    )
    assert again.returncode == 0 and "already complete" in again.stderr


def test_resume_refusals(tmp_path, files, monkeypatch):
    run = tmp_path / "run"
    data = tmp_path / "train.jsonl"
    data.write_text(Path(files["data"]).read_text())
    with pytest.raises(UpoError, match="nothing to resume"):
        pretrain_policy(config(files, train_data=str(data)), run, resume=True)
    with monkeypatch.context() as m:
        interrupt_at(m, pretrain_module, "collect", 2)
        with pytest.raises(Interrupt):
            pretrain_policy(config(files, train_data=str(data)), run)
    with pytest.raises(UpoError, match="different config"):
        pretrain_policy(config(files, train_data=str(data), lr=0.5), run, resume=True)
    # the same path with other puzzles in it: the stored states are of the old ones
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join(lines[1:] + lines[:1]))
    with pytest.raises(UpoError, match="training data changed"):
        pretrain_policy(config(files, train_data=str(data)), run, resume=True)


@pytest.mark.parametrize("cut", ["visiting", "between-epochs"])
def test_resume_refuses_an_mdm_changed_in_place(tmp_path, files, monkeypatch, cut):
    mdm = tmp_path / "mdm"
    write_mdm(mdm, seed=0)
    run = tmp_path / "run"
    cfg = config(files, mdm=str(mdm), epochs=2)
    with monkeypatch.context() as m:
        if cut == "visiting":
            interrupt_at(m, pretrain_module, "collect", 2)
        else:
            interrupt_at(m, pretrain_module, "agreement", 2)  # after epoch 1's checkpoint
        with pytest.raises(Interrupt):
            pretrain_policy(cfg, run)
    assert (run / "config.json").exists() == (cut == "between-epochs")
    write_mdm(mdm, seed=1)
    with pytest.raises(UpoError, match="MDM changed"):
        pretrain_policy(cfg, run, resume=True)


def test_a_kill_after_the_final_checkpoint_leaves_nothing_behind(tmp_path, files, monkeypatch):
    """Killed between the final save and the removal of the stored states: a fresh start is
    refused as for any checkpoint, and --resume reports the run complete and tidies up."""
    run = tmp_path / "run"
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if Path(path).name == VISITED:
            raise Interrupt
        return real_rmtree(path, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(shutil, "rmtree", rmtree)  # the run removes VISITED with it
        with pytest.raises(Interrupt):
            pretrain_policy(config(files), run)
    assert (run / VISITED).is_dir() and json.loads((run / "meta.json").read_text())["complete"]
    with pytest.raises(UpoError, match="already holds a checkpoint"):
        pretrain_policy(config(files), run)
    meta = pretrain_policy(config(files), run, resume=True)
    assert meta["complete"] and not (run / VISITED).exists()
