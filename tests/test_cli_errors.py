"""Every `upo` command fails the same way: one line `upo: error: ...` naming what is wrong, exit
code 2, no traceback, and nothing already on disk changed.

Most cases run `upo.cli.main` in this process (fast); a handful run the real command in a
subprocess to check what a user sees at the process level. `upo data` argument errors are in
test_cli_data.py; library-level checkpoint errors in test_tiny_mdm.py and test_learned_policy.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import types
from pathlib import Path

import pytest

import upo.cli.demo
from test_reliability import (
    mdm_train_config,
    message_lines,
    pretrain_config,
    run_cli,
    upo_config,
    write_mdm,
    write_policy,
    write_puzzles,
    write_yaml,
)
from upo.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good inputs, and damaged copies of them, built once for every case."""
    root = tmp_path_factory.mktemp("cli")
    f = {"root": root}
    f["mdm"] = write_mdm(root / "mdm", seed=0)
    f["other_mdm"] = write_mdm(root / "other-mdm", seed=1)
    f["data"] = write_puzzles(root / "train.jsonl")
    f["data9"] = write_puzzles(root / "nine.jsonl", n=2, task="sudoku9")
    f["policy"] = write_policy(root / "policy", f["mdm"])
    f["mdm9"] = write_mdm(root / "mdm9", task="sudoku9")

    def damaged(name: str, source: str, damage) -> None:
        f[name] = root / name
        shutil.copytree(f[source], f[name])
        damage(f[name])

    def truncate(path: Path, keep: float) -> None:
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])

    def edit_config(d: Path, change) -> None:
        config = json.loads((d / "config.json").read_text())
        change(config)
        (d / "config.json").write_text(json.dumps(config))

    damaged("mdm_truncated", "mdm", lambda d: truncate(d / "model.safetensors", 0.5))
    damaged("mdm_tail_cut", "mdm", lambda d: truncate(d / "model.safetensors", 0.98))
    damaged("mdm_no_config", "mdm", lambda d: (d / "config.json").unlink())
    damaged("mdm_no_weights", "mdm", lambda d: (d / "model.safetensors").unlink())
    damaged("mdm_garbled", "mdm", lambda d: (d / "config.json").write_text('{"kind": "ti'))
    damaged("mdm_list", "mdm", lambda d: (d / "config.json").write_text("[1, 2]"))
    damaged("mdm_binary", "mdm", lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00"))
    damaged("mdm_shape", "mdm", lambda d: edit_config(d, lambda c: c["model"].update(d_model=32)))
    damaged("mdm_key", "mdm", lambda d: edit_config(d, lambda c: c["model"].update(dropout=0.1)))
    damaged("policy_truncated", "policy", lambda d: truncate(d / "model.safetensors", 0.3))
    damaged("policy_no_config", "policy", lambda d: (d / "config.json").unlink())
    damaged(
        "policy_shape", "policy", lambda d: edit_config(d, lambda c: c["policy"].update(width=16))
    )
    (root / "bad.jsonl").write_text('{"puzzle": "12", "solution": "34"}\n')
    (root / "binary.jsonl").write_bytes(bytes(range(256)))
    (root / "a-file").write_text("not a directory\n")
    f["mdm_yaml"] = write_yaml(root / "mdm.yaml", mdm_train_config())
    f["upo_yaml"] = write_yaml(root / "upo.yaml", upo_config(f["mdm"], f["data"]))
    f["pre_yaml"] = write_yaml(root / "pre.yaml", pretrain_config(f["mdm"], f["data"]))
    return f


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    return code, err


def assert_one_error_line(err: str, fragments) -> None:
    lines = message_lines(err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("upo: error: "), err
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def eval_args(f, mdm="mdm", policies="confidence", data="data", task="sudoku4", *extra):
    return (
        "eval", "--task", task, "--mdm", f.get(mdm, mdm), "--data", f.get(data, data),
        "--policies", f.get(policies, policies), "--n", "2", *extra,
    )  # fmt: skip


# (case id, argv from the files fixture, fragments the error line must contain)
CASES = [
    # upo eval: checkpoints
    ("eval-mdm-missing", lambda f: eval_args(f, mdm=f["root"] / "absent"), ["absent", "not found"]),
    ("eval-mdm-truncated", lambda f: eval_args(f, "mdm_truncated"), ["model.safetensors", "truncated"]),
    ("eval-mdm-tail-cut", lambda f: eval_args(f, "mdm_tail_cut"), ["model.safetensors", "truncated"]),
    ("eval-mdm-no-config", lambda f: eval_args(f, "mdm_no_config"), ["config.json is missing"]),
    ("eval-mdm-no-weights", lambda f: eval_args(f, "mdm_no_weights"), ["model.safetensors is missing"]),
    ("eval-mdm-garbled-config", lambda f: eval_args(f, "mdm_garbled"), ["config.json", "not valid JSON"]),
    ("eval-mdm-config-list", lambda f: eval_args(f, "mdm_list"), ["config.json", "JSON object"]),
    ("eval-mdm-config-binary", lambda f: eval_args(f, "mdm_binary"), ["config.json", "not a text file"]),
    ("eval-mdm-wrong-shape", lambda f: eval_args(f, "mdm_shape"), ["shape", "config says"]),
    ("eval-mdm-unknown-key", lambda f: eval_args(f, "mdm_key"), ["dropout", "unknown key"]),
    ("eval-policy-as-mdm", lambda f: eval_args(f, "policy"), ["policy", "MDM kind"]),
    ("eval-mdm-as-policy", lambda f: eval_args(f, policies="mdm"), ["not a policy checkpoint"]),
    ("eval-policy-other-mdm", lambda f: eval_args(f, "other_mdm", "policy"), ["policy was trained on MDM"]),
    ("eval-policy-truncated", lambda f: eval_args(f, policies="policy_truncated"), ["model.safetensors"]),
    ("eval-policy-no-config", lambda f: eval_args(f, policies="policy_no_config"), ["not a policy checkpoint"]),
    ("eval-policy-wrong-shape", lambda f: eval_args(f, policies="policy_shape"), ["shape"]),
    ("eval-policy-missing-dir", lambda f: eval_args(f, policies="./no/such/policy"), ["./no/such/policy", "not found"]),
    ("eval-unknown-policy", lambda f: eval_args(f, policies="confidence,bogus"), ["unknown policy 'bogus'"]),
    ("eval-bad-policy-parameter", lambda f: eval_args(f, policies="softmax:x"), ["softmax:x"]),
    ("eval-policy-zero-temperature", lambda f: eval_args(f, policies=f"{f['policy']}@0"), ["@0", "temperature"]),
    ("eval-policy-bad-temperature", lambda f: eval_args(f, policies=f"{f['policy']}@hot"), ["@hot", "temperature"]),
    ("eval-policy-nan-temperature", lambda f: eval_args(f, policies=f"{f['policy']}@nan"), ["@nan", "temperature"]),
    ("eval-lookahead-zero", lambda f: eval_args(f, policies="lookahead:0"), ["lookahead:0", "K must be at least 1"]),
    ("eval-lookahead-bad-gate", lambda f: eval_args(f, policies="lookahead:2:2"), ["lookahead:2:2", "gate"]),
    ("eval-empty-policies", lambda f: eval_args(f, policies=","), ["--policies is empty"]),
    # upo eval: data and task
    ("eval-data-missing", lambda f: eval_args(f, data=f["root"] / "absent.jsonl"), ["absent.jsonl: no such file"]),
    ("eval-data-directory", lambda f: eval_args(f, data=f["root"]), ["is a directory"]),
    ("eval-data-binary", lambda f: eval_args(f, data=f["root"] / "binary.jsonl"), ["not a text file"]),
    ("eval-data-bad-line", lambda f: eval_args(f, data=f["root"] / "bad.jsonl"), ["bad.jsonl: line 1"]),
    ("eval-data-other-size", lambda f: eval_args(f, data="data9"), ["line 1", "81 characters, expected 16"]),
    ("eval-task-unknown", lambda f: eval_args(f, task="chess"), ["unknown task 'chess'"]),
    ("eval-text-task-own-mdm", lambda f: eval_args(f, task="gsm8k"), ["gsm8k is a text task", "needs a Hugging Face MDM"]),
    ("eval-hf-mdm-token-task", lambda f: eval_args(f, mdm="hf:some/model"), ["hf:some/model is a Hugging Face MDM", "sudoku4 is a token task"]),
    ("eval-text-flag-token-task", lambda f: (*eval_args(f), "--gen-length", "8"), ["--gen-length is for text tasks"]),
    ("eval-task-not-the-mdms", lambda f: eval_args(f, task="sudoku9", data="data9"), ["task sudoku9 needs"]),
    # upo eval: flags
    ("eval-n-zero", lambda f: (*eval_args(f), "--n", "0"), ["--n must be at least 1"]),
    ("eval-k-zero", lambda f: (*eval_args(f), "--k", "0"), ["--k must be at least 1"]),
    ("eval-pass-at-zero", lambda f: (*eval_args(f), "--pass-at", "0"), ["--pass-at"]),
    ("eval-threads-zero", lambda f: (*eval_args(f), "--threads", "0"), ["--threads"]),
    ("eval-dtype-unknown", lambda f: (*eval_args(f), "--dtype", "float64"), ["'float64'", "float32"]),
    ("eval-batch-size-zero", lambda f: (*eval_args(f), "--batch-size", "0"), ["--batch-size"]),
    ("eval-show-item-out-of-range", lambda f: (*eval_args(f), "--show-order", "--show-item", "7"), ["--show-item 7"]),
    ("eval-json-is-a-directory", lambda f: (*eval_args(f), "--json", f["root"]), ["is a directory"]),
    ("eval-plot-is-a-file", lambda f: (*eval_args(f), "--plot", f["root"] / "a-file"), ["--plot", "a-file", "is a file"]),
    ("eval-n-not-a-number", lambda f: (*eval_args(f), "--n", "two"), ["upo eval", "invalid int value: 'two'"]),
    ("eval-missing-argument", lambda f: ("eval", "--task", "sudoku4"), ["required", "--mdm"]),
    # upo mdm train
    ("mdm-config-missing", lambda f: ("mdm", "train", "--config", f["root"] / "absent.yaml", "--out", f["root"] / "m1"), ["absent.yaml", "not found"]),
    ("mdm-config-not-yaml", lambda f: ("mdm", "train", "--config", f["data"], "--out", f["root"] / "m2"), ["train.jsonl"]),
    ("mdm-steps-zero", lambda f: ("mdm", "train", "--config", f["mdm_yaml"], "--out", f["root"] / "m3", "--steps", "0"), ["steps"]),
    ("mdm-threads-zero", lambda f: ("mdm", "train", "--config", f["mdm_yaml"], "--out", f["root"] / "m4", "--threads", "0"), ["threads must be at least 1"]),
    ("mdm-out-holds-checkpoint", lambda f: ("mdm", "train", "--config", f["mdm_yaml"], "--out", f["mdm"]), ["already holds a checkpoint", "--resume"]),
    ("mdm-resume-nothing", lambda f: ("mdm", "train", "--config", f["mdm_yaml"], "--out", f["root"] / "m5", "--resume"), ["nothing to resume"]),
    ("mdm-steps-not-a-number", lambda f: ("mdm", "train", "--config", f["mdm_yaml"], "--out", f["root"] / "m6", "--steps", "x"), ["invalid int value"]),
    # upo policy pretrain
    ("pretrain-out-holds-checkpoint", lambda f: ("policy", "pretrain", "--config", f["pre_yaml"], "--out", f["policy"]), ["already holds a checkpoint"]),
    ("pretrain-config-missing", lambda f: ("policy", "pretrain", "--config", f["root"] / "absent.yaml", "--out", f["root"] / "p1"), ["not found"]),
    ("pretrain-threads-zero", lambda f: ("policy", "pretrain", "--config", f["pre_yaml"], "--out", f["root"] / "p2", "--threads", "0"), ["threads"]),
    # upo policy train
    ("train-reference-bad-k", lambda f: ("policy", "train", "--config", f["upo_yaml"], "--out", f["root"] / "u1", "--reference", "topk:x"), ["topk:x"]),
    ("train-reference-unknown", lambda f: ("policy", "train", "--config", f["upo_yaml"], "--out", f["root"] / "u2", "--reference", "best"), ["unknown reference 'best'"]),
    ("train-beta-negative", lambda f: ("policy", "train", "--config", f["upo_yaml"], "--out", f["root"] / "u3", "--beta", "-1"), ["beta >= 0"]),
    ("train-init-pretrained-without-path", lambda f: ("policy", "train", "--config", f["upo_yaml"], "--out", f["root"] / "u4", "--init", "pretrained"), ["pretrained"]),
    ("train-resume-nothing", lambda f: ("policy", "train", "--config", f["upo_yaml"], "--out", f["root"] / "u5", "--resume"), ["nothing to resume"]),
    ("train-out-holds-checkpoint", lambda f: ("policy", "train", "--config", f["upo_yaml"], "--out", f["policy"]), ["already holds a checkpoint"]),
    ("train-report-to-unknown", lambda f: ("policy", "train", "--config", f["upo_yaml"], "--out", f["root"] / "u6", "--report-to", "mlflow"), ["invalid choice: 'mlflow'"]),
    # upo demo
    ("demo-n-zero", lambda f: ("demo", "--n", "0"), ["--n and --threads must be at least 1"]),
    ("demo-threads-zero", lambda f: ("demo", "--threads", "0"), ["--n and --threads must be at least 1"]),
    ("demo-out-is-a-file", lambda f: ("demo", "--out", f["root"] / "a-file"), ["a-file", "is a file"]),
    ("demo-n-not-a-number", lambda f: ("demo", "--n", "many"), ["upo demo", "invalid int value"]),
    # upo data and the top level
    ("data-make-out-is-a-directory", lambda f: ("data", "make", "sudoku4", "--n", "1", "--out", f["root"]), ["is a directory"]),
    ("data-check-binary", lambda f: ("data", "check", f["root"] / "binary.jsonl"), ["not a text file"]),
    ("data-unknown-task", lambda f: ("data", "make", "chess", "--n", "1", "--out", f["root"] / "d.jsonl"), ["invalid choice: 'chess'"]),
    ("no-command", lambda f: (), ["required"]),
    ("unknown-command", lambda f: ("train",), ["invalid choice: 'train'"]),
]  # fmt: skip


@pytest.mark.parametrize("argv, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_clear_line_and_exit_2(files, capsys, argv, fragments):
    try:
        code, err = run(capsys, *argv(files))
    except SystemExit as exit_:  # argparse errors leave through SystemExit
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2, err
    assert_one_error_line(err, fragments)


@pytest.mark.parametrize(
    "name, data",
    [
        ("mdm", lambda f: mdm_train_config(lr=-0.1)),
        ("mdm", lambda f: mdm_train_config(learning_rate=0.1)),
        ("mdm", lambda f: mdm_train_config(batch_size="big")),
        ("mdm", lambda f: mdm_train_config(model={"d_model": 15, "n_heads": 2})),
        ("mdm", lambda f: mdm_train_config(task="chess")),
        ("pretrain", lambda f: pretrain_config(f["mdm"], f["data"], lr=-1.0)),
        ("pretrain", lambda f: pretrain_config(f["mdm"], f["data"], n_puzzles=1000)),
        ("pretrain", lambda f: pretrain_config(f["mdm9"], f["data"])),
        ("pretrain", lambda f: pretrain_config(f["root"] / "absent", f["data"])),
        ("pretrain", lambda f: pretrain_config(f["mdm"], f["data"], reference="bogus")),
        ("pretrain", lambda f: pretrain_config(f["mdm"], f["data"], decode_with="bogus")),
        ("pretrain", lambda f: pretrain_config(f["mdm"], f["data"], decode_with=[])),
        (
            "pretrain",
            lambda f: pretrain_config(f["mdm"], f["data"], decode_with=["confidence", "bogus"]),
        ),
        (
            "pretrain",
            lambda f: pretrain_config(f["mdm"], f["data"], decode_with=str(f["root"] / "absent")),
        ),
        (
            "pretrain",
            lambda f: pretrain_config(f["other_mdm"], f["data"], decode_with=str(f["policy"])),
        ),
        ("pretrain", lambda f: pretrain_config(f["mdm"], f["data"], task="gsm8k")),
        ("pretrain", lambda f: pretrain_config(f["mdm"], f["data"], mdm_options={"dtype": "int8"})),
        ("pretrain", lambda f: {**pretrain_config(f["mdm"], f["data"]), "mdm": "hf:some/model"}),
        ("train", lambda f: upo_config(f["mdm"], f["data"], lr=-1.0)),
        ("train", lambda f: upo_config(f["mdm"], f["data"], adam_betas=[0.9])),
        ("train", lambda f: upo_config(f["mdm"], f["data"], checkpoint_every=0)),
        ("train", lambda f: upo_config(f["mdm9"], f["data"])),
        ("train", lambda f: upo_config(f["policy"], f["data"])),
        ("train", lambda f: upo_config(f["mdm"], f["root"] / "absent.jsonl")),
        ("train", lambda f: upo_config(f["mdm"], f["data"], prompts_per_step=500)),
        ("train", lambda f: upo_config(f["mdm"], f["data"], policy={"width": 7, "n_heads": 2})),
        (
            "train",
            lambda f: upo_config(
                f["other_mdm"], f["data"], init="pretrained", pretrained=str(f["policy"])
            ),
        ),
    ],
    ids=[
        "mdm-negative-lr",
        "mdm-unknown-key",
        "mdm-wrong-type",
        "mdm-bad-model",
        "mdm-task",
        "pre-negative-lr",
        "pre-too-few-puzzles",
        "pre-mdm-of-other-task",
        "pre-mdm-missing",
        "pre-reference",
        "pre-decode-with-unknown-rule",
        "pre-decode-with-empty-list",
        "pre-decode-with-list-with-unknown-rule",
        "pre-decode-with-missing-policy",
        "pre-decode-with-policy-of-other-mdm",
        "pre-text-task",
        "pre-mdm-dtype",
        "pre-hf-mdm",
        "upo-negative-lr",
        "upo-betas",
        "upo-checkpoint-every",
        "upo-mdm-of-other-task",
        "upo-policy-as-mdm",
        "upo-data-missing",
        "upo-too-few-puzzles",
        "upo-policy-width",
        "upo-pretrained-on-other-mdm",
    ],  # fmt: skip
)
def test_bad_config_is_one_clear_line_and_writes_nothing(files, capsys, tmp_path, name, data):
    config = write_yaml(tmp_path / "config.yaml", data(files))
    out = tmp_path / "out"
    group = {
        "mdm": ["mdm", "train"],
        "pretrain": ["policy", "pretrain"],
        "train": ["policy", "train"],
    }
    code, err = run(capsys, *group[name], "--config", config, "--out", out)
    assert code == 2, err
    assert_one_error_line(err, [])
    assert not out.exists(), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize(
    "backend, module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")]
)
def test_report_to_without_its_package_is_one_line_and_creates_nothing(
    files, capsys, tmp_path, monkeypatch, backend, module
):
    monkeypatch.setitem(sys.modules, module, None)  # import fails
    out = tmp_path / "run"
    argv = ("policy", "train", "--config", files["upo_yaml"], "--out", out)
    code, err = run(capsys, *argv, "--report-to", backend)
    assert code == 2
    assert_one_error_line(err, [backend, "pip install"])
    assert not out.exists()


class FakeBackends:
    """Stand-ins for tensorboard's SummaryWriter and the wandb module that record their calls."""

    def __init__(self):
        self.calls = []
        self.tensorboard = types.SimpleNamespace(SummaryWriter=self.writer)
        self.wandb = types.SimpleNamespace(init=self.init)

    def writer(self, logdir):
        self.calls.append(("writer", logdir))
        return types.SimpleNamespace(
            add_scalar=lambda key, value, step: self.calls.append(("scalar", key, value, step)),
            close=lambda: self.calls.append(("close",)),
        )

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        return types.SimpleNamespace(
            log=lambda data, step: self.calls.append(("log", data, step)),
            finish=lambda: self.calls.append(("finish",)),
        )


@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_report_to_mirrors_every_step_of_metrics_jsonl(
    files, capsys, tmp_path, monkeypatch, backend
):
    fake = FakeBackends()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake.tensorboard)
    monkeypatch.setitem(sys.modules, "wandb", fake.wandb)
    out = tmp_path / "run"
    argv = ("policy", "train", "--config", files["upo_yaml"], "--out", out, "--report-to", backend)
    code, err = run(capsys, *argv)
    assert code == 0, err
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if backend == "tensorboard":
        assert fake.calls[0] == ("writer", str(out / "tensorboard"))
        seen = {(key, step): value for _, key, value, step in fake.calls[1:-1]}
    else:
        _, init = fake.calls[0]
        assert init["dir"] == str(out) and init["config"]["reference"] == "softmax:0.5"
        seen = {(k, step): v for _, data, step in fake.calls[1:-1] for k, v in data.items()}
    assert fake.calls[-1] in {("close",), ("finish",)}
    assert {step for _, step in seen} == {r["step"] for r in logged} == {1, 2}
    for record in logged:
        assert seen[("reward_mean", record["step"])] == pytest.approx(record["reward_mean"])
        assert ("step", record["step"]) not in seen


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_refused_runs_leave_existing_outputs_untouched(files, capsys, tmp_path):
    """A command that refuses to run changes nothing already written: a checkpoint with its
    metrics, an earlier results file, an earlier puzzle file."""
    run_dir = tmp_path / "run"
    shutil.copytree(files["mdm"], run_dir)
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    results = tmp_path / "results.json"
    results.write_text('{"old": true}\n')
    puzzles = tmp_path / "puzzles.jsonl"
    shutil.copy(files["data"], puzzles)
    before = tree_digest(tmp_path)

    refused = [
        ("mdm", "train", "--config", files["mdm_yaml"], "--out", run_dir),
        ("policy", "train", "--config", files["upo_yaml"], "--out", run_dir),
        ("policy", "pretrain", "--config", files["pre_yaml"], "--out", run_dir),
        (*eval_args(files, policies="bogus"), "--json", results),
        (*eval_args(files, "mdm_truncated"), "--json", results),
        ("data", "make", "sudoku4", "--n", "0", "--out", puzzles),
        ("data", "make", "sudoku4", "--n", "2", "--blanks", "13", "--out", puzzles),
    ]
    for argv in refused:
        code, err = run(capsys, *argv)
        assert code == 2, (argv, err)
    assert tree_digest(tmp_path) == before


def test_demo_without_shipped_files_names_the_missing_checkpoint(capsys, tmp_path, monkeypatch):
    """An install stripped of its shipped files (upo.assets finds none): one line naming what
    is missing, and nothing written. With them, the demo runs anywhere (tests/test_demo.py)."""
    from upo import assets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(assets, "shipped_root", lambda: None)
    code, err = run(capsys, "demo", "--n", "1", "--out", tmp_path / "report")
    assert code == 2
    assert_one_error_line(err, ["sudoku9-mdm", "not found", "ships none"])
    assert not (tmp_path / "report").exists()


def test_a_bug_is_one_line_too_and_upo_debug_shows_the_traceback(capsys, monkeypatch):
    def broken(args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(upo.cli.demo, "cmd_demo", broken)
    code, err = run(capsys, "demo")
    assert code == 1
    lines = message_lines(err)
    assert lines == [
        "upo: internal error: ZeroDivisionError: division by zero (UPO_DEBUG=1 shows the traceback)"
    ]
    monkeypatch.setenv("UPO_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["demo"])


def test_disk_errors_are_one_line(capsys, monkeypatch):
    def full(args):
        raise OSError(28, "No space left on device", "/data/out.jsonl")

    monkeypatch.setattr(upo.cli.demo, "cmd_demo", full)
    code, err = run(capsys, "demo")
    assert code == 2
    assert message_lines(err) == ["upo: error: /data/out.jsonl: No space left on device"]


# --- the real process: exit status and stderr as a user sees them ------------------------------

PROCESS_CASES = [
    lambda f: eval_args(f, "mdm_truncated"),
    lambda f: eval_args(f, "other_mdm", "policy"),
    lambda f: ("mdm", "train", "--config", f["mdm_yaml"], "--out", f["root"] / "s1", "--threads", "0"),
    lambda f: ("policy", "train", "--config", f["upo_yaml"], "--out", f["root"] / "s2", "--resume"),
    lambda f: ("policy", "pretrain", "--config", f["pre_yaml"], "--out", f["policy"]),
    lambda f: ("eval", "--task", "sudoku4", "--n", "x"),
]  # fmt: skip


def test_the_real_command_prints_one_line_and_exits_2(files):
    for make in PROCESS_CASES:
        argv = make(files)
        result = run_cli(*argv, cwd=files["root"])
        assert result.returncode == 2, (argv, result.stderr)
        assert "Traceback" not in result.stderr
        lines = message_lines(result.stderr)
        assert len(lines) == 1 and lines[0].startswith("upo: error: "), (argv, result.stderr)
        assert result.stdout == "", result.stdout


def pretrain_ok(files, capsys, tmp_path, name: str, **overrides) -> Path:
    """Run `upo policy pretrain` on the tiny fixture config with `overrides`, into
    tmp_path/name; it must succeed. Returns the output directory."""
    config = pretrain_config(files["mdm"], files["data"], **overrides)
    out = tmp_path / name
    yaml = write_yaml(tmp_path / f"{name}.yaml", config)
    code, err = run(capsys, "policy", "pretrain", "--config", yaml, "--out", out)
    assert code == 0, err
    # the metrics live in the checkpoint directory, one line per epoch, as for the other trainers
    epochs = [
        json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == list(range(1, config["epochs"] + 1))
    return out


def test_pretrain_visits_states_with_a_policy_checkpoint(files, capsys, tmp_path):
    """decode_with may name a policy of this MDM: its greedy order visits the training states."""
    decode_with = str(files["policy"])
    out = pretrain_ok(files, capsys, tmp_path, "pre", decode_with=decode_with, target="correct")
    assert (out / "model.safetensors").exists()
    saved = json.loads((out / "config.json").read_text())
    assert str(files["policy"]) in json.dumps(saved)


def test_pretrain_with_a_list_of_visitors_keeps_all_their_states(files, capsys, tmp_path):
    """DAgger with aggregation: each listed order decodes the same puzzles and every state is kept,
    so the training set is the union of the single-visitor ones."""

    def states(decode_with, name):
        # target "correct" keeps only the informative states, so the counts depend on the order
        out = pretrain_ok(files, capsys, tmp_path, name, decode_with=decode_with, target="correct")
        return json.loads((out / "meta.json").read_text())["states"]

    policy = str(files["policy"])
    alone = states(policy, "policy"), states("random", "random")
    assert alone[0] != alone[1]
    assert states([policy, "random"], "both") == sum(alone)


def test_eval_samples_a_policy_checkpoint_at_a_temperature(files, capsys, tmp_path):
    """DIR@T samples the learned policy, so --pass-at gives it a curve and a likeliest of N;
    DIR alone stays greedy (one order, no curve)."""
    out = tmp_path / "eval.json"
    policies = f"{files['policy']},{files['policy']}@1.5"
    code, err = run(capsys, *eval_args(files, policies=policies), "--pass-at", "3", "--json", out)
    assert code == 0, err
    greedy, sampled = json.loads(out.read_text())["results"]
    assert greedy["policy"] == "policy" and "pass_at" not in greedy
    assert sampled["policy"] == "policy@1.5"
    assert len(sampled["pass_at"]) == 3 and sampled["likeliest_of_n"]["n"] == 3


def test_pretrain_imitates_the_trial_decode_search(files, capsys, tmp_path):
    """reference: lookahead:K: the search visits the training states and is the target."""
    out = pretrain_ok(files, capsys, tmp_path, "pre", reference="lookahead:2:1")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["states"] > 0
    assert "lookahead:2:1" in json.dumps(json.loads((out / "config.json").read_text()))


def test_pretrain_reports_max_confidences_agreement_with_the_reference(files, capsys, tmp_path):
    """The bar for imitation: with max-confidence as the reference it agrees with itself on every
    held-out state; with a different rule it does not."""

    def confidence_agreement(reference):
        out = pretrain_ok(files, capsys, tmp_path, reference.replace(":", "-"), reference=reference)
        return json.loads((out / "meta.json").read_text())["confidence_agreement"]

    assert confidence_agreement("confidence") == 1.0
    assert confidence_agreement("left-to-right") < 1.0


def test_a_rule_name_wins_over_a_directory_of_that_name(files, tmp_path, monkeypatch):
    from upo.models.registry import load_mdm
    from upo.policies.learned import LearnedPolicy
    from upo.policies.resolve import resolve_policy

    monkeypatch.chdir(tmp_path)
    shutil.copytree(files["policy"], tmp_path / "confidence")
    mdm = load_mdm(files["mdm"])
    assert not isinstance(resolve_policy("confidence", mdm), LearnedPolicy)
    assert isinstance(resolve_policy("./confidence", mdm), LearnedPolicy)
    assert isinstance(resolve_policy("./confidence@0.5", mdm), LearnedPolicy)


def test_two_checkpoints_with_one_folder_name_keep_separate_rows(files, capsys, tmp_path):
    for run_name in ("a", "b"):
        shutil.copytree(files["policy"], tmp_path / run_name / "policy")
    out = tmp_path / "eval.json"
    policies = f"confidence,{tmp_path / 'a' / 'policy'},{tmp_path / 'b' / 'policy'}"
    code, err = run(capsys, *eval_args(files, policies=policies), "--json", out)
    assert code == 0, err
    names = [r["policy"] for r in json.loads(out.read_text())["results"]]
    assert names == ["confidence", str(tmp_path / "a" / "policy"), str(tmp_path / "b" / "policy")]


@pytest.mark.parametrize("dtype, bf16", [("float32", False), ("bfloat16", True)])
def test_pretrain_runs_the_mdm_in_the_dtype_asked_for(
    files, capsys, tmp_path, monkeypatch, dtype, bf16
):
    import upo.rl.pretrain

    real, loaded = upo.rl.pretrain.load_mdm, []

    def spy(*args, **kwargs):
        loaded.append(real(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(upo.rl.pretrain, "load_mdm", spy)
    out = pretrain_ok(files, capsys, tmp_path, "pre-" + dtype, mdm_options={"dtype": dtype})
    assert [m.cfg.bf16 for m in loaded] == [bf16]
    saved = json.loads((out / "config.json").read_text())["train"]["mdm_options"]
    assert saved == {"dtype": dtype}
