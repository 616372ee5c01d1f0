"""Run directories as users share them: a reader (`upo eval --policies OUT`) while a checkpoint is
being written, a kill during the first write, a second trainer started on the same --out, and an
--out that is a symlink. The kills are disk images taken before every rename and removal of a
checkpoint write (test_reliability.disk_images), each read or recovered as the next command would.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import upo.training.mdm as train_module
from test_reliability import (
    MDM_KILL,
    TINY_POLICY,
    assert_clean_run_dir,
    assert_logs_intact,
    assert_one_complete_version,
    assert_steps_once,
    disk_images,
    mdm_train_config,
    message_lines,
    pretrain_config,
    same_weights,
    sealed,
    start_and_kill,
    upo_config,
    write_logs,
    write_mdm,
    write_puzzles,
    write_version,
    write_yaml,
)
from upo.checkpoint import CHECKPOINT_FILES
from upo.cli import main
from upo.config import from_dict
from upo.io_utils import read_jsonl, recover_dir
from upo.models.registry import load_mdm
from upo.policies.learned import PolicyConfig, PolicyNet, load_policy, save_policy
from upo.training.mdm import MDMTrainConfig, train_mdm


def one_error(capsys) -> str:
    lines = message_lines(capsys.readouterr().err)
    assert lines and lines[-1].startswith("upo: error: "), lines
    return lines[-1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("run-dirs")
    return {"mdm": write_mdm(root / "mdm"), "data": write_puzzles(root / "train.jsonl")}


# --- checkpoint writes: readers and kills ---------------------------------------------------------


def test_a_reader_finds_a_complete_checkpoint_at_every_instant_of_a_write(
    tmp_path, monkeypatch, inputs
):
    """`upo eval --policies OUT` loads OUT at any instant of a training run's checkpoint writes
    (the next one, then the final one that drops the resume state): always a whole checkpoint,
    and never an older one after a newer one."""
    mdm = load_mdm(inputs["mdm"])
    run = tmp_path / "p" / "run"

    def write(version: int, final: bool = False) -> None:
        net = PolicyNet(PolicyConfig(feature_dim=mdm.feature_dim, **TINY_POLICY))
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(version))
        resume = {} if final else {"optimizer": torch.optim.AdamW(net.parameters())}
        meta = {"kind": "policy", "task": "sudoku4", "version": version}
        save_policy(run, net, mdm.fingerprint(), meta, {"steps": 3}, **resume)

    write(1)
    write_logs(run)
    images = disk_images(monkeypatch, run.parent, lambda: (write(2), write(3, final=True)))
    versions = []
    for image in images:
        net = load_policy(image / "run", mdm)  # what upo eval does, without any recovery
        versions.append(round(float(next(net.parameters()).detach().flatten()[0])))
    assert versions == sorted(versions) and set(versions) == {1, 2, 3}


@pytest.mark.parametrize("logs_first", [True, False])
def test_a_kill_during_the_first_checkpoint_write_never_loses_it(tmp_path, monkeypatch, logs_first):
    """A run's first checkpoint, into an OUT that holds only its logs so far (or nothing): at
    every instant a reader finds no checkpoint or the whole new one, and once the new one was
    complete on disk the next run keeps it."""
    parent = tmp_path / "p"
    run = parent / "run"
    if logs_first:
        write_logs(run)
    else:
        parent.mkdir()
    images = disk_images(monkeypatch, parent, lambda: write_version(run, 1))
    was_sealed = []
    for image in images:
        killed = image / "run"
        if (killed / "config.json").exists():  # how readers recognise a checkpoint
            assert_one_complete_version(killed, {1})
        was_sealed.append(sealed(killed))
        recover_dir(killed)
        if was_sealed[-1] or image == images[-1]:
            assert_one_complete_version(killed, {1})
        else:
            assert not [name for name in CHECKPOINT_FILES if (killed / name).exists()], image
        if logs_first:
            assert_logs_intact(killed)
        assert [p.name for p in image.iterdir()] in ([], ["run"]), image
    assert True in was_sealed and False in was_sealed  # both kinds of instant were seen


def test_resume_after_a_kill_in_the_middle_of_a_checkpoint_write(tmp_path, monkeypatch):
    """Killed while the step-4 checkpoint's files were moving into OUT (its meta.json in place,
    the step-2 weights and resume state still there): --resume finishes the write, continues
    from step 4 and ends as an uninterrupted run."""
    cfg = from_dict(MDMTrainConfig, mdm_train_config(steps=8, checkpoint_every=2), "test")
    parent = tmp_path / "p"
    run, image = parent / "run", tmp_path / "image"
    real_replace = os.replace

    def steps_in_place() -> int:
        return json.loads((run / "meta.json").read_text())["steps"]

    def replace(src, dst):
        moving_weights = Path(dst) == run / "model.safetensors"
        if moving_weights and not image.exists() and steps_in_place() == 4:
            shutil.copytree(parent, image)  # the disk a SIGKILL at this instant leaves
        return real_replace(src, dst)

    with monkeypatch.context() as mp:
        mp.setattr(os, "replace", replace)
        train_mdm(cfg, run)  # the uninterrupted run
    killed = image / "run"
    assert json.loads((killed / "train_state.json").read_text())["step"] == 2  # half written

    losses = []
    real_loss = train_module.masked_diffusion_loss
    monkeypatch.setattr(
        train_module,
        "masked_diffusion_loss",
        lambda *a, **k: losses.append(1) or real_loss(*a, **k),
    )
    train_mdm(cfg, killed, resume=True)
    assert len(losses) == 4  # steps 5 to 8: the step-4 checkpoint was kept
    same_weights(run, killed)
    assert_clean_run_dir(killed)
    assert_steps_once(read_jsonl(killed / "metrics.jsonl"), list(range(1, 9)))


# --- one run per directory -------------------------------------------------------------------------


def test_a_second_trainer_on_a_running_out_is_refused(tmp_path, capsys):
    """`upo mdm train` twice on one --out: the second one (fresh or --resume) stops at once with
    one line, and the first one's metrics.jsonl has each step once. Its SIGKILL releases the
    lock: --resume then runs."""
    config = write_yaml(tmp_path / "mdm.yaml", MDM_KILL)
    run = tmp_path / "run"
    argv = ["mdm", "train", "--config", str(config), "--out", str(run)]
    refusals = []

    def second_run():
        for extra in ([], ["--resume"]):
            refusals.append((main([*argv, *extra]), one_error(capsys)))

    start_and_kill(argv, run, tmp_path, meanwhile=second_run)
    for code, line in refusals:
        assert code == 2 and str(run) in line and "another upo process" in line, line
    assert main([*argv, "--resume"]) == 0
    assert_steps_once(read_jsonl(run / "metrics.jsonl"), list(range(5, 151, 5)))
    assert_clean_run_dir(run)
    assert not Path(f"{run}.lock").exists()  # a finished run removes its lock file


@pytest.mark.parametrize("command", ["mdm train", "policy train", "policy pretrain"])
def test_every_trainer_refuses_an_out_another_run_holds(tmp_path, capsys, inputs, command):
    configs = {
        "mdm train": mdm_train_config(),
        "policy train": upo_config(inputs["mdm"], inputs["data"]),
        "policy pretrain": pretrain_config(inputs["mdm"], inputs["data"]),
    }
    config = write_yaml(tmp_path / "config.yaml", configs[command])
    run = tmp_path / "run"
    with open(f"{run}.lock", "a+") as held:  # the first run, holding its lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([*command.split(), "--config", str(config), "--out", str(run)]) == 2
        line = one_error(capsys)
    assert str(run) in line and "another upo process" in line
    assert not run.exists()


def test_an_out_that_is_a_symlink_stays_one(tmp_path, capsys):
    """--out a link to a directory elsewhere: the run is written into that directory, the link
    stays the same link, and the lock and --resume follow it to the directory."""
    target = tmp_path / "disk" / "run1"
    target.mkdir(parents=True)
    link = tmp_path / "runs" / "latest"
    link.parent.mkdir()
    link.symlink_to(target)
    config = write_yaml(tmp_path / "mdm.yaml", mdm_train_config())  # checkpoints at 2 and 4
    argv = ["mdm", "train", "--config", str(config), "--out", str(link)]
    assert main(argv) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads((target / "meta.json").read_text())["complete"]
    assert (target / "model.safetensors").is_file()
    assert_steps_once(read_jsonl(target / "metrics.jsonl"), [1, 2, 3, 4])
    assert sorted(p.name for p in link.parent.iterdir()) == ["latest"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["run1"]
    capsys.readouterr()

    assert main([*argv, "--resume"]) == 0
    assert "training already complete" in capsys.readouterr().err
    with open(f"{target}.lock", "a+") as held:  # a run that named the directory itself
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([*argv, "--resume"]) == 2
        assert "another upo process" in one_error(capsys)
    assert link.is_symlink() and os.readlink(link) == str(target)
