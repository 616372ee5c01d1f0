"""checkpoints/headline.yaml: the manifest that says where the learned order beats max-confidence
(task, MDM, policy, eval flags, and how to draw fresh test data). Acceptance checks read it, so
its keys are exactly those, its checkpoints load for its task, its data command makes fresh
data, and the evaluation it describes runs end to end from the command line."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from upo.cli import main

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "checkpoints" / "headline.yaml"
KEYS = {"task", "mdm", "policy", "eval_args", "data_make"}


@pytest.fixture(scope="module")
def headline() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def test_manifest_has_exactly_the_agreed_keys(headline):
    assert set(headline) == KEYS
    assert isinstance(headline["eval_args"], str) and isinstance(headline["data_make"], str)
    for placeholder in ("{seed}", "{n}", "{out}"):
        assert placeholder in headline["data_make"]
    assert headline["data_make"].startswith(f"upo data make {headline['task']} ")


def test_checkpoints_are_complete_and_of_the_manifest_task(headline):
    for key, kind in (("mdm", "mdm"), ("policy", "policy")):
        meta = json.loads((ROOT / headline[key] / "meta.json").read_text())
        assert meta["kind"] == kind and meta["task"] == headline["task"] and meta["complete"]


def test_fresh_data_and_the_evaluation_run_from_the_manifest(
    headline, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(ROOT)  # the manifest's paths are relative to the repository
    data = tmp_path / "fresh.jsonl"
    make = headline["data_make"].format(seed=12345, n=40, out=data)
    assert main(shlex.split(make)[1:]) == 0
    assert len(data.read_text().splitlines()) == 40
    out = tmp_path / "eval.json"
    args = [
        "eval", "--task", headline["task"], "--mdm", headline["mdm"], "--data", str(data),
        "--policies", f"confidence,{headline['policy']}", "--threads", "1", "--json", str(out),
        *shlex.split(headline["eval_args"]),
    ]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    assert record["n"] == 40 and record["task"] == headline["task"]
    names = [r["policy"] for r in record["results"]]
    assert names == ["confidence", Path(headline["policy"]).name]  # a directory by its name
