"""Reliability: interrupted runs resume to the same result, nothing written is lost, no pickle.

The kill tests drive the real `upo` command in a subprocess with a tiny config: wait for the first
checkpoint, SIGKILL (or SIGINT) the process, run it again with --resume and compare with an
uninterrupted run. The checkpoint-swap tests take a snapshot of the disk before every rename a
checkpoint write makes (what a kill at that instant would leave) and check each one recovers.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import upo.rl.grpo as grpo_module
import upo.training.mdm as train_module
from upo.checkpoint import CHECKPOINT_FILES, load_train_state, prepare_run_dir, save_checkpoint
from upo.config import from_dict, load_config, to_dict
from upo.errors import UpoError
from upo.io_utils import SEALED, JsonlLog, atomic_write_text, read_jsonl, recover_dir
from upo.models.registry import load_mdm
from upo.policies.learned import PolicyConfig, PolicyNet, load_policy, save_policy
from upo.rl.grpo import UPOConfig, train_upo
from upo.rl.pretrain import PretrainConfig
from upo.tasks.registry import get_task
from upo.tasks.sudoku.generate import generate_puzzles
from upo.tasks.sudoku.grid import SPECS
from upo.tasks.sudoku.io import write_jsonl
from upo.training.mdm import MDMTrainConfig, build_model, train_mdm

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {"d_model": 16, "n_layers": 2, "n_heads": 2, "ff_mult": 2}
TINY_POLICY = {"width": 8, "n_heads": 2, "mlp_hidden": 8}
# tqdm progress lines on stderr (not a terminal): "desc:  40%|####  | 4/10 [00:01<00:02, ...]"
PROGRESS = re.compile(r"\|\s*\d+/\d+ \[|\d+it \[")


# --- builders shared with test_cli_errors.py ------------------------------------------------------


def cli_env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("UPO_DEBUG", None)
    return env


def run_cli(*args, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """`upo ARGS` in a fresh Python process, the way a user runs it."""
    command = [sys.executable, "-m", "upo.cli", *map(str, args)]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, env=cli_env(), timeout=timeout
    )


def message_lines(stderr: str) -> list[str]:
    """stderr without progress-bar redraws and blank lines."""
    return [line for line in stderr.splitlines() if line.strip() and not PROGRESS.search(line)]


def write_mdm(path: Path, seed: int = 0, task: str = "sudoku4") -> Path:
    """A random tiny MDM checkpoint, as `upo mdm train` writes it."""
    cfg = from_dict(MDMTrainConfig, {"task": task, "model": TINY_MODEL}, "test")
    torch.manual_seed(seed)
    model = build_model(cfg, get_task(task))
    config = {"kind": "tiny", "task": task, "model": to_dict(model.cfg)}
    save_checkpoint(path, model, config, {"kind": "mdm", "task": task})
    return path


def write_puzzles(path: Path, n: int = 24, seed: int = 0, task: str = "sudoku4") -> Path:
    blanks = (6, 9) if task == "sudoku4" else (40, 45)
    pairs = list(generate_puzzles(SPECS[task], n, blanks, seed=seed))
    write_jsonl(path, np.stack([p for p, _ in pairs]), np.stack([s for _, s in pairs]))
    return path


def write_policy(path: Path, mdm_dir: Path) -> Path:
    mdm = load_mdm(mdm_dir)
    torch.manual_seed(0)
    net = PolicyNet(PolicyConfig(feature_dim=mdm.feature_dim, **TINY_POLICY))
    save_policy(path, net, mdm.fingerprint(), {"kind": "policy", "task": "sudoku4"})
    return path


def mdm_train_config(**overrides) -> dict:
    data = {
        "task": "sudoku4",
        "model": TINY_MODEL,
        "steps": 4,
        "batch_size": 8,
        "warmup_steps": 2,
        "threads": 1,
        "log_every": 1,
        "eval_every": 2,
        "checkpoint_every": 2,
        "val_size": 8,
        "val_puzzles": 2,
        "val_blanks": [6],
    }
    data.update(overrides)
    return data


def upo_config(mdm_dir: Path, train_data: Path, **overrides) -> dict:
    data = {
        "task": "sudoku4",
        "mdm": str(mdm_dir),
        "train_data": str(train_data),
        "policy": TINY_POLICY,
        "init": "random",
        "reference": "softmax:0.5",
        "steps": 2,
        "prompts_per_step": 2,
        "group_size": 2,
        "inner_steps": 2,
        "warmup_steps": 2,
        "threads": 1,
        "checkpoint_every": 1,
    }
    data.update(overrides)
    return data


def pretrain_config(mdm_dir: Path, train_data: Path, **overrides) -> dict:
    data = {
        "task": "sudoku4",
        "mdm": str(mdm_dir),
        "train_data": str(train_data),
        "policy": TINY_POLICY,
        "n_puzzles": 4,
        "held_out": 2,
        "epochs": 1,
        "threads": 1,
    }
    data.update(overrides)
    return data


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny sudoku4 MDM, a second MDM with other weights, puzzles, and a policy for the first."""
    root = tmp_path_factory.mktemp("reliability")
    mdm = write_mdm(root / "mdm", seed=0)
    other = write_mdm(root / "mdm-other", seed=1)
    data = write_puzzles(root / "train.jsonl")
    policy = write_policy(root / "policy", mdm)
    return {"root": root, "mdm": mdm, "other_mdm": other, "data": data, "policy": policy}


def same_weights(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), f"{name} differs after resume"


def assert_clean_run_dir(run: Path) -> None:
    """A finished run: final checkpoint, no resume state, no leftovers of checkpoint swaps."""
    assert json.loads((run / "meta.json").read_text())["complete"] is True
    assert not (run / "train_state.json").exists()
    leftovers = [p.name for p in run.parent.iterdir() if p.name.startswith(f".{run.name}.tmp")]
    assert not leftovers and not run.with_name(run.name + ".old").exists(), leftovers


# --- SIGKILL / SIGINT, then --resume -----------------------------------------------------------


def start_and_kill(
    args, run: Path, cwd: Path, sig=signal.SIGKILL, after: float = 0.1, meanwhile=None
) -> str:
    """Start `upo ARGS`, wait for its first resumable checkpoint, call `meanwhile()` if given,
    send `sig`; return its stderr."""
    log_path = cwd / f"{run.name}.stderr"
    command = [sys.executable, "-m", "upo.cli", *map(str, args)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
            # A test runner started in the background (`cmd &`) ignores SIGINT and its children
            # inherit that; the command under test must see Ctrl-C as a user's terminal sends it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + 120
            while not (run / "train_state.json").exists():
                if proc.poll() is not None:
                    pytest.fail(f"ended (rc {proc.returncode}) before a checkpoint: "
                                f"{log_path.read_text()[-2000:]}")  # fmt: skip
                assert time.monotonic() < deadline, "no checkpoint within 120 s"
                time.sleep(0.005)
            if meanwhile is not None:
                meanwhile()
            time.sleep(after)  # somewhere inside a later checkpoint interval
            proc.send_signal(sig)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # The run must really have been cut short, else the test proves nothing: lengthen it.
    assert proc.returncode != 0, "the run finished before the signal arrived"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    return log_path.read_text()


class Interrupt(BaseException):
    """Stands in for a kill inside a process (no `except Exception` catches it)."""


def interrupt_at(monkeypatch, module, name: str, call: int) -> None:
    """Make `module.name` raise Interrupt on its `call`-th call (1-based)."""
    real = getattr(module, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def assert_steps_once(metrics: list[dict], expected: list[int]) -> None:
    steps = [m["step"] for m in metrics]
    assert steps == expected, f"duplicated or missing steps: {steps}"


MDM_KILL = mdm_train_config(
    steps=150, batch_size=16, log_every=5, eval_every=50, checkpoint_every=20, val_size=16
)


def test_mdm_train_resumes_after_sigkill_to_the_uninterrupted_result(tmp_path):
    config = write_yaml(tmp_path / "mdm.yaml", MDM_KILL)
    run = tmp_path / "run"
    start_and_kill(["mdm", "train", "--config", config, "--out", run], run, tmp_path)

    state = json.loads((run / "train_state.json").read_text())
    assert 0 < state["step"] < MDM_KILL["steps"] and state["step"] % 20 == 0
    assert not json.loads((run / "meta.json").read_text())["complete"]

    resumed = run_cli("mdm", "train", "--config", config, "--out", run, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"steps {state['step']}->150" in resumed.stderr  # it resumed, it did not restart

    full = tmp_path / "full"
    train_mdm(load_config(MDMTrainConfig, config), full)
    same_weights(full, run)
    assert_clean_run_dir(run)
    cut, whole = read_jsonl(run / "metrics.jsonl"), read_jsonl(full / "metrics.jsonl")
    assert_steps_once(cut, list(range(5, 151, 5)))
    assert [(m["step"], m["loss"]) for m in cut] == [(m["step"], m["loss"]) for m in whole]
    meta, full_meta = (json.loads((d / "meta.json").read_text()) for d in (run, full))
    assert meta["steps"] == 150 and meta["validation"] == full_meta["validation"]


def test_policy_train_resumes_after_sigkill_bit_identical(tmp_path, setup):
    """UPO resume is exact: weights and optimiser moments are restored, and every step's rollout
    randomness is derived from (seed, step), so no generator state needs saving."""
    data = upo_config(
        setup["mdm"], setup["data"], steps=40, checkpoint_every=4, val_data=str(setup["data"])
    )
    data.update(val_n=4, eval_every=10)
    config = write_yaml(tmp_path / "upo.yaml", data)
    run = tmp_path / "run"
    start_and_kill(["policy", "train", "--config", config, "--out", run], run, tmp_path)
    step = json.loads((run / "train_state.json").read_text())["step"]
    assert 0 < step < 40 and step % 4 == 0

    resumed = run_cli("policy", "train", "--config", config, "--out", run, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    full = tmp_path / "full"
    train_upo(load_config(UPOConfig, config), full)
    same_weights(full, run)
    assert_clean_run_dir(run)
    cut, whole = read_jsonl(run / "metrics.jsonl"), read_jsonl(full / "metrics.jsonl")
    assert_steps_once(cut, list(range(1, 41)))
    keys = ("step", "loss", "reward_mean", "entropy", "val_solve_rate")
    assert [[m.get(k) for k in keys] for m in cut] == [[m.get(k) for k in keys] for m in whole]
    meta, full_meta = (json.loads((d / "meta.json").read_text()) for d in (run, full))
    assert meta["validation"] == full_meta["validation"] and meta["steps"] == 40


def test_ctrl_c_exits_130_with_one_line_and_resume_completes(tmp_path):
    config = write_yaml(tmp_path / "mdm.yaml", MDM_KILL)
    run = tmp_path / "run"
    stderr = start_and_kill(
        ["mdm", "train", "--config", config, "--out", run], run, tmp_path, sig=signal.SIGINT
    )
    assert "Traceback" not in stderr
    assert message_lines(stderr)[-1].startswith("upo: interrupted; resume with --resume")
    resumed = run_cli("mdm", "train", "--config", config, "--out", run, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_clean_run_dir(run)
    assert_steps_once(read_jsonl(run / "metrics.jsonl"), list(range(5, 151, 5)))


# --- checkpoint swaps interrupted at every point ---------------------------------------------------


def tiny_net(value: float) -> torch.nn.Linear:
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.fill_(value)
        net.bias.fill_(value)
    return net


def write_version(run: Path, version: int, final: bool = False) -> None:
    """Checkpoint `version`: every file of it says which version it belongs to. A final one, as
    a run's last, has no train_state files."""
    net = tiny_net(float(version))
    opt = torch.optim.AdamW(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    resume = {} if final else {"optimizer": opt, "train_state": {"step": version}}
    save_checkpoint(run, net, {"version": version}, {"version": version}, **resume)


def assert_one_complete_version(run: Path, allowed: set[int], final: set[int] = frozenset()) -> int:
    """All files of `run` are one version's, in `allowed`; those in `final` have no train_state."""
    config = json.loads((run / "config.json").read_text())["version"]
    meta = json.loads((run / "meta.json").read_text())["version"]
    weight = load_file(str(run / "model.safetensors"))["weight"]
    assert config == meta == round(float(weight[0, 0])) and config in allowed
    if config in final:
        assert not (run / "train_state.json").exists()
        assert not (run / "train_state.safetensors").exists()
    else:
        assert json.loads((run / "train_state.json").read_text())["step"] == config
        load_file(str(run / "train_state.safetensors"))
    return config


LOGS = {"metrics.jsonl": '{"step": 1}\n{"step": 2}\n', "tensorboard/events.out": "events"}


def write_logs(run: Path) -> None:
    for name, text in LOGS.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)


def assert_logs_intact(run: Path) -> None:
    for name, text in LOGS.items():
        assert (run / name).read_text() == text, f"{name} lost"


def disk_images(monkeypatch, parent: Path, write) -> list[Path]:
    """Copies of `parent` taken before every rename and removal under it while `write()` runs,
    and one after: what a SIGKILL at each of those instants leaves on disk."""
    images: list[Path] = []
    real_replace, real_unlink, real_rmtree = os.replace, os.unlink, shutil.rmtree

    def snapshot(path) -> None:
        if parent in Path(path).parents:
            image = parent.with_name(f"image{len(images)}")
            shutil.copytree(parent, image, symlinks=True)
            images.append(image)

    def replace(src, dst, *args, **kwargs):
        snapshot(dst)
        return real_replace(src, dst, *args, **kwargs)

    def unlink(path, *args, **kwargs):
        snapshot(path)
        return real_unlink(path, *args, **kwargs)

    def rmtree(path, *args, **kwargs):
        snapshot(path)
        return real_rmtree(path, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(os, "replace", replace)
        mp.setattr(os, "unlink", unlink)
        mp.setattr(shutil, "rmtree", rmtree)
        write()
    snapshot(parent / "after")
    return images


def sealed(run: Path) -> bool:
    """Whether a checkpoint write beside `run` had its new checkpoint complete on disk."""
    return any((stray / SEALED).exists() for stray in run.parent.glob(f".{run.name}.tmp*"))


@pytest.mark.parametrize("final", [False, True])
def test_a_kill_at_any_instant_of_a_checkpoint_write_loses_nothing(tmp_path, monkeypatch, final):
    """Recover each disk image of the second checkpoint's write as the next run would: it holds
    one complete checkpoint with the run's logs, the new one as soon as that was complete on
    disk, and never the old one again after the new one (a final checkpoint, which drops the
    train_state files, too)."""
    parent = tmp_path / "p"
    run = parent / "run"
    write_version(run, 1)
    write_logs(run)
    images = disk_images(monkeypatch, parent, lambda: write_version(run, 2, final))
    assert len(images) >= 8  # the json writes, the seal, the moves, the cleanup

    versions = []
    for image in images:
        recovered = image / "run"
        was_sealed = sealed(recovered)
        recover_dir(recovered)
        versions.append(assert_one_complete_version(recovered, {1, 2}, {2} if final else set()))
        assert versions[-1] == 2 or not was_sealed, f"{image}: complete new checkpoint lost"
        assert_logs_intact(recovered)
        assert sorted(p.name for p in image.iterdir()) == ["run"], image
    assert versions == sorted(versions) and set(versions) == {1, 2}
    assert_one_complete_version(run, {2}, {2} if final else set())
    assert_logs_intact(run)


@pytest.mark.parametrize("at_call", range(1, 10))
def test_an_exception_inside_a_checkpoint_write_leaves_a_complete_checkpoint(
    tmp_path, monkeypatch, at_call
):
    """Ctrl-C (or a full disk) at any rename of a checkpoint write: the previous checkpoint is in
    place, or the new one once it was complete on disk (its files were being moved in), with
    the logs, and no temporary directory is left."""
    parent = tmp_path / "p"
    run = parent / "run"
    write_version(run, 1)
    write_logs(run)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(Path(dst))
        if len(calls) == at_call:
            raise Interrupt
        return real_replace(src, dst)

    with monkeypatch.context() as mp:
        mp.setattr(os, "replace", replace)
        with pytest.raises(Interrupt):
            write_version(run, 2)
    moving_in = calls[at_call - 1].parent == run  # the new checkpoint was sealed by then
    assert_one_complete_version(run, {2} if moving_in else {1})
    assert_logs_intact(run)
    assert sorted(p.name for p in parent.iterdir()) == ["run"]


# --- metrics logs and single files ---------------------------------------------------------------


def test_resume_drops_a_torn_last_metrics_line(tmp_path):
    """A kill in the middle of a log write leaves half a JSON line; resume must not choke on it."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    log = JsonlLog(path, truncate_after_step=2)
    log.write({"step": 3, "loss": 1.0})
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]
    # and lines past the checkpoint are dropped, so a resumed run logs each step once
    JsonlLog(path, truncate_after_step=1)
    assert [r["step"] for r in read_jsonl(path)] == [1]


def test_mdm_resume_with_a_torn_metrics_line(tmp_path, monkeypatch):
    cfg = from_dict(MDMTrainConfig, mdm_train_config(steps=6), "test")
    run = tmp_path / "run"
    with monkeypatch.context() as mp:
        interrupt_at(mp, train_module, "masked_diffusion_loss", 4)
        with pytest.raises(Interrupt):
            train_mdm(cfg, run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.')
    train_mdm(cfg, run, resume=True)
    assert_steps_once(read_jsonl(run / "metrics.jsonl"), [1, 2, 3, 4, 5, 6])


def test_atomic_write_interrupted_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text("old\n")

    def fail(src, dst):
        raise Interrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(Interrupt):
        atomic_write_text(path, "new\n")
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_interrupted_figure_save_keeps_the_old_png(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from upo.plots import _save

    path = tmp_path / "figure.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    _save(fig, path)
    old = path.read_bytes()
    assert old.startswith(b"\x89PNG")

    def fail(src, dst):
        raise Interrupt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(Interrupt):
        _save(fig, path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]


def test_written_files_and_checkpoints_get_the_usual_modes_not_private_ones(tmp_path):
    # mkstemp/mkdtemp make 0600/0700 temporaries; what they become must be readable like any file
    # the user writes (here umask 022: 0644 files, 0755 directories).
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "results.json", "{}\n")
        ckpt = write_mdm(tmp_path / "mdm")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o644
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o755
    for f in ckpt.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name


def test_atomic_write_to_a_directory_is_one_clear_error(tmp_path):
    with pytest.raises(UpoError, match="is a directory"):
        atomic_write_text(tmp_path, "x")


# --- unusable resume state -------------------------------------------------------------------------


@pytest.fixture
def killed_mdm_run(tmp_path, monkeypatch):
    """An MDM run stopped after its step-2 checkpoint (of 6)."""
    cfg = from_dict(MDMTrainConfig, mdm_train_config(steps=6), "test")
    run = tmp_path / "run"
    with monkeypatch.context() as mp:
        interrupt_at(mp, train_module, "masked_diffusion_loss", 3)
        with pytest.raises(Interrupt):
            train_mdm(cfg, run)
    assert json.loads((run / "train_state.json").read_text())["step"] == 2
    return cfg, run


def one_line(err: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    "damage, needles",
    [
        (lambda run: truncate(run / "train_state.safetensors", 0.5), ["train_state.safetensors"]),
        (lambda run: truncate(run / "model.safetensors", 0.6), ["model.safetensors"]),
        (lambda run: (run / "train_state.json").write_text("{"), ["train_state.json", "JSON"]),
        (lambda run: (run / "train_state.json").write_text("[]"), ["train_state.json", "object"]),
        (lambda run: (run / "train_state.json").write_text('{"x": 1}'), ["train_state.json"]),
        (lambda run: (run / "config.json").unlink(), ["config.json", "missing"]),
        (lambda run: (run / "train_state.safetensors").unlink(), ["train_state.safetensors"]),
    ],
    ids=[
        "state-truncated",
        "weights-truncated",
        "state-json-garbled",
        "state-json-list",
        "state-json-no-step",
        "no-config",
        "no-state-tensors",
    ],  # fmt: skip
)
def test_resume_from_a_damaged_checkpoint_is_one_clear_error(killed_mdm_run, damage, needles):
    cfg, run = killed_mdm_run
    damage(run)
    with pytest.raises(UpoError) as err:
        train_mdm(cfg, run, resume=True)
    one_line(err, *needles)


def test_resume_with_optimizer_state_of_another_model_is_one_clear_error(killed_mdm_run):
    _, run = killed_mdm_run
    net = build_model(from_dict(MDMTrainConfig, mdm_train_config(), "t"), get_task("sudoku4"))
    state = json.loads((run / "train_state.json").read_text())
    fewer = {**state, "param_groups": [{**state["param_groups"][0], "params": [0]}]}
    (run / "train_state.json").write_text(json.dumps(fewer))
    with pytest.raises(UpoError) as err:
        load_train_state(run, torch.optim.AdamW(net.parameters()))
    one_line(err, "optimizer state")
    # same number of tensors, other shapes: moments of another model
    (run / "train_state.json").write_text(json.dumps(state))
    tensors = load_file(str(run / "train_state.safetensors"))
    save_file({k: v[..., :1].contiguous() if v.dim() else v for k, v in tensors.items()},
              str(run / "train_state.safetensors"))  # fmt: skip
    with pytest.raises(UpoError) as err:
        load_train_state(run, torch.optim.AdamW(net.parameters()))
    one_line(err, "optimizer state", "shape")


def test_policy_resume_refuses_a_changed_mdm(tmp_path, setup):
    """The run was trained on one MDM; the MDM at that path was replaced before --resume."""
    mdm = tmp_path / "mdm"
    shutil.copytree(setup["mdm"], mdm)
    cfg = from_dict(UPOConfig, upo_config(mdm, setup["data"], steps=3), "test")
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        interrupt_at(mp, grpo_module, "update", 2)
        with pytest.raises(Interrupt):
            train_upo(cfg, run)
    shutil.rmtree(mdm)
    shutil.copytree(setup["other_mdm"], mdm)
    with pytest.raises(UpoError) as err:
        train_upo(cfg, run, resume=True)
    one_line(err, str(run), "MDM")


def test_resume_refuses_nothing_and_a_fresh_start_refuses_a_checkpoint(tmp_path, setup):
    with pytest.raises(UpoError) as err:
        prepare_run_dir(tmp_path / "absent", {}, resume=True)
    one_line(err, "nothing to resume")
    with pytest.raises(UpoError) as err:
        prepare_run_dir(setup["mdm"], {}, resume=False)
    one_line(err, "already holds a checkpoint", "--resume")


# --- config values ---------------------------------------------------------------------------------

BAD_VALUES = [
    ("lr", -0.001, "lr"),
    ("lr", 0, "lr"),
    ("lr", ".nan", "finite"),
    ("lr", "fast", "lr"),
    ("weight_decay", -0.1, "weight_decay"),
    ("threads", 0, "threads"),
    ("threads", "two", "threads"),
    ("bogus_key", 1, "unknown key 'bogus_key'"),
]


def yaml_text(data: dict, key: str, value) -> str:
    text = yaml.safe_dump({k: v for k, v in data.items() if k != key})
    raw = value if isinstance(value, str) and value.startswith(".") else json.dumps(value)
    return text + f"{key}: {raw}\n"


@pytest.mark.parametrize("key, value, needle", BAD_VALUES)
@pytest.mark.parametrize("which", ["mdm", "upo", "pretrain"])
def test_bad_config_values_are_one_clear_error(tmp_path, setup, which, key, value, needle):
    cls, data = {
        "mdm": (MDMTrainConfig, mdm_train_config()),
        "upo": (UPOConfig, upo_config(setup["mdm"], setup["data"])),
        "pretrain": (PretrainConfig, pretrain_config(setup["mdm"], setup["data"])),
    }[which]
    path = tmp_path / "config.yaml"
    path.write_text(yaml_text(data, key, value))
    with pytest.raises(UpoError) as err:
        load_config(cls, path)
    one_line(err, str(path), needle)


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("grad_clip", 0.0, "grad_clip"),
        ("min_lr_ratio", 1.5, "min_lr_ratio"),
        ("log_every", 0, "log_every"),
        ("eval_every", 0, "eval_every"),
        ("val_size", 0, "val_size"),
        ("val_puzzles", 0, "val_puzzles"),
    ],
)
def test_bad_mdm_config_values(tmp_path, key, value, needle):
    path = tmp_path / "mdm.yaml"
    path.write_text(yaml_text(mdm_train_config(), key, value))
    with pytest.raises(UpoError) as err:
        load_config(MDMTrainConfig, path)
    one_line(err, needle)


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("grad_clip", 0.0, "grad_clip"),
        ("warmup_steps", -1, "warmup_steps"),
        ("adam_betas", [0.9], "adam_betas"),
        ("adam_betas", [0.9, 1.5], "adam_betas"),
        ("checkpoint_every", 0, "checkpoint_every"),
        ("eval_every", 0, "eval_every"),
        ("val_n", 0, "val_n"),
        ("clip_eps", 1.5, "clip_eps"),
        ("group_size", 1, "group_size"),
        ("init", "warm", "init"),
    ],
)
def test_bad_upo_config_values(tmp_path, setup, key, value, needle):
    path = tmp_path / "upo.yaml"
    path.write_text(yaml_text(upo_config(setup["mdm"], setup["data"]), key, value))
    with pytest.raises(UpoError) as err:
        load_config(UPOConfig, path)
    one_line(err, needle)


def test_exponent_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads `lr: 1e-3` as the string '1e-3'; upo takes it as the number people mean."""
    path = tmp_path / "mdm.yaml"
    path.write_text("task: sudoku4\nlr: 1e-3\nweight_decay: 5E-2\n")
    cfg = load_config(MDMTrainConfig, path)
    assert cfg.lr == 0.001 and cfg.weight_decay == 0.05


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"prompts_per_step": 100}, "prompts_per_step"),
        ({"val_n": 100}, "val_n"),
        ({"task": "sudoku9"}, "task"),
        ({"reference": "softmax:x"}, "softmax:x"),
        ({"reference": "topk:0"}, "topk:0"),
    ],
)
def test_upo_settings_that_do_not_fit_the_data_or_model(tmp_path, setup, overrides, needle):
    data = upo_config(setup["mdm"], setup["data"], val_data=str(setup["data"]), val_n=4)
    data.update(overrides)
    cfg = from_dict(UPOConfig, data, "test")
    with pytest.raises(UpoError) as err:
        train_upo(cfg, tmp_path / "run")
    one_line(err, needle)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_impossible_validation_level_is_one_clear_error(tmp_path):
    cfg = from_dict(MDMTrainConfig, mdm_train_config(val_blanks=[99]), "test")
    with pytest.raises(UpoError) as err:
        train_mdm(cfg, tmp_path / "run")
    one_line(err, "val_blanks")


# --- no pickle anywhere ----------------------------------------------------------------------------

UNPICKLING = re.compile(
    r"torch\.load\(|torch\.jit\.load\(|\bpickle\b|cloudpickle|\bdill\b|joblib|"
    r"(np|numpy)\.load\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False"
)


def test_no_unpickling_in_the_source():
    hits = []
    for path in sorted((REPO / "src" / "upo").rglob("*.py")):
        for no, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if UNPICKLING.search(code):
                hits.append(f"{path.relative_to(REPO)}:{no}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_hf_models_load_safetensors_only():
    text = (REPO / "src" / "upo" / "models" / "hf.py").read_text()
    calls = re.findall(r"auto\.from_pretrained\((.*?)\)", text, flags=re.S)
    assert calls and all("use_safetensors=True" in c for c in calls)


def test_loading_and_resuming_never_unpickles(tmp_path, setup, monkeypatch, killed_mdm_run):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    mdm = load_mdm(setup["mdm"])
    load_policy(setup["policy"], mdm)
    cfg, run = killed_mdm_run
    train_mdm(cfg, run, resume=True)
    upo = from_dict(UPOConfig, upo_config(setup["mdm"], setup["data"], steps=2), "test")
    train_upo(upo, tmp_path / "upo")
    for directory in (run, tmp_path / "upo", setup["mdm"], setup["policy"]):
        names = {p.name for p in directory.iterdir()}
        assert names <= CHECKPOINT_FILES | {"metrics.jsonl"}, names
        assert all(n.endswith((".json", ".jsonl", ".safetensors")) for n in names)
