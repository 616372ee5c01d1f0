"""`upo eval --json OUT --resume`: an interrupted evaluation continues where it stopped and ends
with exactly the results of an uninterrupted one, decoding only the batches that were missing."""

from __future__ import annotations

import json

import pytest
import torch

import upo.evaluate
from test_reliability import message_lines, write_mdm, write_policy, write_puzzles
from upo.cli import main

TIMING = ("seconds", "items_per_s")
UNMASK = upo.evaluate.unmask


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    mdm = write_mdm(root / "mdm")
    return {
        "mdm": mdm,
        "data": write_puzzles(root / "puzzles.jsonl", n=10),
        "policy": write_policy(root / "policy", mdm),
    }


def eval_argv(setup, out, *extra):
    # 10 puzzles in batches of 3: 4 batches per sample. The greedy rule decodes once, the two
    # sampled policies twice each (--pass-at 2): 20 batches in all.
    policies = f"confidence,softmax:0.5,{setup['policy']}@1.0"
    return [
        "eval", "--task", "sudoku4", "--mdm", str(setup["mdm"]), "--data", str(setup["data"]),
        "--policies", policies, "--pass-at", "2", "--batch-size", "3", "--json", str(out), *extra,
    ]  # fmt: skip


def count_batches(monkeypatch, stop_after: int | None = None) -> list[torch.Tensor]:
    """The fill orders of the batches decoded, in order; with stop_after, the next batch is
    interrupted (Ctrl-C)."""
    calls = []

    def counted(*args, **kwargs):
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt
        traj = UNMASK(*args, **kwargs)
        calls.append(traj.order.clone())
        return traj

    monkeypatch.setattr(upo.evaluate, "unmask", counted)
    return calls


def untimed(path) -> list[dict]:
    results = json.loads(path.read_text())["results"]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in results]


def interrupt(setup, out, monkeypatch, capsys, after: int) -> None:
    count_batches(monkeypatch, stop_after=after)
    assert main(eval_argv(setup, out)) == 130
    capsys.readouterr()
    assert not out.exists()
    assert len(list(out.with_name(out.name + ".partial").glob("*.safetensors"))) == after


@pytest.fixture
def uninterrupted(setup, tmp_path, monkeypatch):
    """The results and the batches' fill orders of the evaluation run in one go."""
    calls = count_batches(monkeypatch)
    out = tmp_path / "full.json"
    assert main(eval_argv(setup, out)) == 0
    assert len(calls) == 20
    return untimed(out), calls


def same_orders(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("after", [1, 6, 11, 19])
def test_resume_gives_the_uninterrupted_results_decoding_only_what_was_missing(
    setup, uninterrupted, tmp_path, monkeypatch, capsys, after
):
    out = tmp_path / "out.json"
    interrupt(setup, out, monkeypatch, capsys, after)
    calls = count_batches(monkeypatch)
    assert main(eval_argv(setup, out, "--resume")) == 0
    results, orders = uninterrupted
    # the batches decoded now are the uninterrupted run's last ones, sampled orders included:
    # the random generator continues from where the interrupted run left it
    assert same_orders(calls, orders[after:])
    assert untimed(out) == results
    assert not out.with_name(out.name + ".partial").exists()  # removed once the JSON is written


def test_a_batch_file_cut_short_is_decoded_again(
    setup, uninterrupted, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out.json"
    interrupt(setup, out, monkeypatch, capsys, 7)
    last = sorted(out.with_name(out.name + ".partial").glob("*.safetensors"))[-1]
    last.write_bytes(last.read_bytes()[:50])
    calls = count_batches(monkeypatch)
    assert main(eval_argv(setup, out, "--resume")) == 0
    results, orders = uninterrupted
    assert same_orders(calls, orders[6:])
    assert untimed(out) == results


def test_a_run_without_resume_starts_afresh(setup, uninterrupted, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.json"
    interrupt(setup, out, monkeypatch, capsys, 6)
    calls = count_batches(monkeypatch)
    assert main(eval_argv(setup, out)) == 0
    results, orders = uninterrupted
    assert same_orders(calls, orders)
    assert untimed(out) == results


@pytest.mark.parametrize(
    "change, named",
    [(["--seed", "1"], "seed"), (["--batch-size", "4"], "batch_size"), (["--n", "9"], "n")],
)
def test_resume_with_other_settings_is_refused(setup, tmp_path, monkeypatch, capsys, change, named):
    out = tmp_path / "out.json"
    interrupt(setup, out, monkeypatch, capsys, 3)
    argv = eval_argv(setup, out, "--resume")
    # later flags win in argparse, so appending the change overrides the original value
    assert main([*argv, *change]) == 2
    (line,) = message_lines(capsys.readouterr().err)
    assert "--resume with different settings" in line and named in line
    # the refused run kept the interrupted one's batches
    assert len(list(out.with_name(out.name + ".partial").glob("*.safetensors"))) == 3


def test_resume_needs_json_and_something_to_resume(setup, tmp_path, capsys):
    argv = eval_argv(setup, tmp_path / "none.json", "--resume")
    assert main(argv) == 2
    assert "nothing to resume" in capsys.readouterr().err
    no_json = [a for a in argv if a not in ("--json", str(tmp_path / "none.json"))]
    assert main(no_json) == 2
    assert "--resume needs --json" in capsys.readouterr().err
