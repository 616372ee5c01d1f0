"""Output paths under adversarial conditions: two runs aiming at one `--json`, an output path that
is a FIFO or a device, and a disk that fills up mid-write. Each ends in one line `upo: error: ...`
(exit 2), and nothing already written is lost."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import upo.demo
import upo.evaluate
import upo.stored_chunks
from test_reliability import mdm_train_config, message_lines
from upo.cli import main

REPO = Path(__file__).resolve().parents[1]
MDM = REPO / "checkpoints" / "sudoku4-mdm"
DATA = REPO / "data" / "sudoku4-test.jsonl"
UNMASK = upo.evaluate.unmask
NO_SPACE = OSError(errno.ENOSPC, "No space left on device")

pytestmark = pytest.mark.skipif(not MDM.is_dir(), reason="needs the shipped sudoku4 MDM")


def eval_argv(out: Path, *extra: str) -> list[str]:
    # 8 puzzles in batches of 2 under a greedy and a sampled rule: 8 batches, about a second.
    return [
        "eval", "--task", "sudoku4", "--mdm", str(MDM), "--data", str(DATA), "--n", "8",
        "--batch-size", "2", "--policies", "confidence,softmax:0.5", "--json", str(out), *extra,
    ]  # fmt: skip


def partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def untimed(path: Path) -> list[dict]:
    results = json.loads(path.read_text())["results"]
    return [{k: v for k, v in r.items() if k not in ("seconds", "items_per_s")} for r in results]


def count_batches(monkeypatch, stop_after: int | None = None) -> list:
    """The batches decoded, one entry each; with stop_after, Ctrl-C at the next one."""
    calls = []

    def counted(*args, **kwargs):
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt
        calls.append(None)
        return UNMASK(*args, **kwargs)

    monkeypatch.setattr(upo.evaluate, "unmask", counted)
    return calls


def no_work(monkeypatch) -> None:
    """Make any decoding fail loudly: the refusals below must come before it."""

    def refused(*args, **kwargs):
        raise AssertionError("decoding started")

    monkeypatch.setattr(upo.evaluate, "unmask", refused)


def one_error(capsys) -> str:
    """The one `upo:` line a failed command ends with (after any progress it reported)."""
    lines = message_lines(capsys.readouterr().err)
    (line,) = [line for line in lines if line.startswith("upo:")]
    assert line == lines[-1] and line.startswith("upo: error: ")
    return line


def stray_temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The results of an undisturbed run, to compare with."""
    out = tmp_path_factory.mktemp("clean") / "clean.json"
    assert main(eval_argv(out)) == 0
    return untimed(out)


# --- 1. two runs, one --json -----------------------------------------------------------------


def test_a_second_writer_to_the_same_json_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.json"
    batch = partial(out) / "p0_0.safetensors"  # stands for the first run's work in progress
    batch.parent.mkdir()
    batch.write_bytes(b"first run's batch")
    no_work(monkeypatch)
    with open(f"{out}.lock", "a+") as held:  # the first run, holding its lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(eval_argv(out)) == 2
        line = one_error(capsys)
        assert str(out) in line and "another upo process" in line
        assert main(eval_argv(out, "--resume")) == 2  # resuming it under its feet too
        one_error(capsys)
    assert batch.read_bytes() == b"first run's batch" and not out.exists()


def test_the_lock_of_a_killed_run_does_not_block(tmp_path, monkeypatch, capsys, clean):
    out = tmp_path / "out.json"
    hold = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"
    )
    command = [sys.executable, "-c", hold, f"{out}.lock"]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as holder:
        assert holder.stdout.readline() == b"locked\n"
        holder.kill()  # SIGKILL: no chance to clean up
    assert Path(f"{out}.lock").exists()  # left behind, as after a SIGKILL mid-run
    assert main(eval_argv(out)) == 0
    assert untimed(out) == clean
    assert not Path(f"{out}.lock").exists()  # a finished run removes its lock file


def test_a_fresh_run_decodes_everything_itself(tmp_path, monkeypatch, capsys, clean):
    out = tmp_path / "out.json"
    # an interrupted run with another seed leaves 3 batches in out.json.partial/
    count_batches(monkeypatch, stop_after=3)
    assert main(eval_argv(out, "--seed", "1")) == 130
    capsys.readouterr()
    assert len(list(partial(out).glob("*.safetensors"))) == 3
    calls = count_batches(monkeypatch)
    assert main(eval_argv(out)) == 0
    assert len(calls) == 8  # none of the leftover batches was taken
    assert untimed(out) == clean


# --- 2. output paths that are not regular files ------------------------------------------------


@pytest.fixture
def guard_dev(monkeypatch):
    """A broken check must never create anything in /dev or replace a device node there (the
    tests run as root in places): each such call fails the test instead."""

    def guard(real, path_arg: int, creates=lambda *a, **k: True):
        def guarded(*args, **kwargs):
            if str(args[path_arg]).startswith("/dev/") and creates(*args, **kwargs):
                raise AssertionError(f"about to write {args[path_arg]}")
            return real(*args, **kwargs)

        return guarded

    monkeypatch.setattr(os, "replace", guard(os.replace, 1))
    monkeypatch.setattr(os, "mkdir", guard(os.mkdir, 0))
    monkeypatch.setattr(os, "open", guard(os.open, 0, lambda p, flags, *a, **k: flags & os.O_CREAT))


def test_json_that_is_a_fifo_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    no_work(monkeypatch)
    assert main(eval_argv(fifo)) == 2
    assert "named pipe" in one_error(capsys)
    assert fifo.is_fifo() and not partial(fifo).exists()


def test_json_that_is_dev_null_is_refused_before_any_work(monkeypatch, capsys, guard_dev):
    no_work(monkeypatch)
    assert main(eval_argv(Path("/dev/null"))) == 2
    line = one_error(capsys)
    assert "/dev/null" in line and "device" in line
    assert Path("/dev/null").is_char_device()


def test_a_figure_path_that_is_a_fifo_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    os.mkfifo(tmp_path / "fill_order.png")
    no_work(monkeypatch)
    assert main([*eval_argv(tmp_path / "out.json"), "--plot", str(tmp_path)]) == 2
    assert "fill_order.png" in one_error(capsys)
    assert (tmp_path / "fill_order.png").is_fifo()


def test_demo_refuses_a_fifo_among_its_outputs_before_any_work(tmp_path, monkeypatch, capsys):
    os.mkfifo(tmp_path / "report.md")

    def refused(*args, **kwargs):
        raise AssertionError("the demo started")

    monkeypatch.setattr(upo.demo, "load_mdm", refused)
    monkeypatch.chdir(REPO)
    assert main(["demo", "--out", str(tmp_path), "--n", "1"]) == 2
    assert "report.md" in one_error(capsys)
    assert (tmp_path / "report.md").is_fifo()


def test_data_make_into_a_fifo_is_refused(tmp_path, capsys, guard_dev):
    fifo = tmp_path / "puzzles.jsonl"
    os.mkfifo(fifo)
    assert main(["data", "make", "sudoku4", "--n", "1", "--out", str(fifo)]) == 2
    assert "named pipe" in one_error(capsys)
    assert fifo.is_fifo()
    assert main(["data", "make", "sudoku4", "--n", "1", "--out", "/dev/null"]) == 2
    assert "device" in one_error(capsys)


def test_json_through_a_symlink_replaces_the_link_not_its_target(tmp_path, capsys, clean):
    # Decided in io_utils.check_file_target: the path named is what gets written.
    elsewhere = tmp_path / "shared.json"
    elsewhere.write_text("another run's results\n")
    link = tmp_path / "latest.json"
    link.symlink_to(elsewhere)
    assert main(eval_argv(link)) == 0
    assert not link.is_symlink() and untimed(link) == clean
    assert elsewhere.read_text() == "another run's results\n"


# --- 3. a full disk ----------------------------------------------------------------------------


def fill_disk_for(monkeypatch, name_part: str, when=lambda: True) -> None:
    """os.write fails with ENOSPC on files whose path contains `name_part` (once `when()`)."""
    real_write = os.write

    def write(fd, data):
        if name_part in os.readlink(f"/proc/self/fd/{fd}") and when():
            raise NO_SPACE
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_disk_full_writing_json_keeps_the_old_file_and_the_batches(
    tmp_path, monkeypatch, capsys, clean
):
    out = tmp_path / "out.json"
    out.write_text("old results\n")
    fill_disk_for(monkeypatch, ".out.json.")  # the temporary the results go to first
    assert main(eval_argv(out)) == 2
    line = one_error(capsys)
    assert str(out) in line and "No space left on device" in line and "--resume" in line
    assert out.read_text() == "old results\n"
    assert stray_temporaries(tmp_path) == []
    assert len(list(partial(out).glob("*.safetensors"))) == 8
    monkeypatch.undo()  # room again: --resume writes the results without decoding anything
    calls = count_batches(monkeypatch)
    assert main(eval_argv(out, "--resume")) == 0
    assert calls == [] and untimed(out) == clean and not partial(out).exists()


def test_disk_full_storing_a_batch_is_one_line(tmp_path, monkeypatch, capsys, clean):
    out = tmp_path / "out.json"
    real_save = upo.stored_chunks.save_file
    saved = []

    def save_file(tensors, filename):
        if len(saved) == 5:  # safetensors reports a full disk in its own exception type
            Path(filename).write_bytes(b"half a batch")
            raise upo.stored_chunks.SafetensorError(
                f"Error while serializing: I/O error: No space left on device (os error 28) "
                f'at path "{filename}"'
            )
        saved.append(filename)
        return real_save(tensors, filename)

    monkeypatch.setattr(upo.stored_chunks, "save_file", save_file)
    assert main(eval_argv(out)) == 2
    line = one_error(capsys)
    assert "No space left on device" in line and ".safetensors" in line
    assert len(list(partial(out).glob("*.safetensors"))) == 5
    assert stray_temporaries(tmp_path) == []
    monkeypatch.undo()
    calls = count_batches(monkeypatch)
    assert main(eval_argv(out, "--resume")) == 0
    assert len(calls) == 3 and untimed(out) == clean


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_disk_full_writing_a_checkpoint_keeps_the_last_one(tmp_path, monkeypatch, capsys):
    config = tmp_path / "mdm.yaml"
    config.write_text(yaml.safe_dump(mdm_train_config()))  # 4 steps, a checkpoint every 2
    run = tmp_path / "run"
    # the first checkpoint is written; the disk is full when the second one is
    fill_disk_for(monkeypatch, "/.run.tmp", when=lambda: (run / "config.json").exists())
    assert main(["mdm", "train", "--config", str(config), "--out", str(run)]) == 2
    line = one_error(capsys)
    assert "No space left on device" in line
    assert json.loads((run / "train_state.json").read_text())["step"] == 2
    assert stray_temporaries(tmp_path) == []
    monkeypatch.undo()
    assert main(["mdm", "train", "--config", str(config), "--out", str(run), "--resume"]) == 0
    meta = json.loads((run / "meta.json").read_text())
    assert meta["complete"] and meta["steps"] == 4


def test_disk_full_writing_a_checkpoints_weights_is_one_line(tmp_path, monkeypatch, capsys):
    """safetensors reports a full disk as its own SafetensorError, not an OSError."""
    from safetensors import SafetensorError

    import upo.checkpoint as checkpoint

    config = tmp_path / "mdm.yaml"
    config.write_text(yaml.safe_dump(mdm_train_config()))  # 4 steps, a checkpoint every 2
    run = tmp_path / "run"
    save = checkpoint.save_file

    def full_after_the_first(tensors, path, *args, **kwargs):
        if (run / "config.json").exists():
            raise SafetensorError(f"I/O error: No space left on device (os error 28) at {path}")
        return save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", full_after_the_first)
    assert main(["mdm", "train", "--config", str(config), "--out", str(run)]) == 2
    line = one_error(capsys)
    assert "No space left on device" in line and str(run) in line and ".tmp" not in line
    assert json.loads((run / "train_state.json").read_text())["step"] == 2
    assert stray_temporaries(tmp_path) == []
