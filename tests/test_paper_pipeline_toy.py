"""The CI version of scripts/paper_pipeline_toy.sh (FAST=1: a few steps of each stage): the whole
GPU user's path at toy size on the real LLaDA code: data, an MDM trained by upo saved as a
Hugging Face directory, `upo eval` of the rules on the paper's CSV format, `upo policy train`
with the paper's recipe shape, `upo eval` of the learned policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from reference_models import require_reference_models

ROOT = Path(__file__).resolve().parents[1]


def test_paper_pipeline_runs_end_to_end_on_the_real_llada_code(tmp_path):
    code = require_reference_models() / "llada"
    env = {
        **os.environ,
        "FAST": "1",
        "OUT": str(tmp_path / "toy"),
        "UPO": str(Path(sys.executable).parent / "upo"),
        "MODEL_CODE": str(code),
    }
    run = subprocess.run(
        ["bash", "scripts/paper_pipeline_toy.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    model = tmp_path / "toy" / "mdm" / "model"
    assert {"config.json", "model.safetensors", "modeling_llada.py", "tokenizer.json"} <= {
        p.name for p in model.iterdir()
    }
    rules = json.loads((tmp_path / "toy" / "eval-rules.json").read_text())
    assert rules["task"] == "sudoku4-paper" and rules["n"] == 20
    assert [r["policy"] for r in rules["results"]][:2] == ["confidence", "margin"]
    # One blank per step: NFE is the mean number of blanks (8 to 11 in these puzzles).
    assert all(8 <= r["nfe"] <= 11 for r in rules["results"])
    learned = json.loads((tmp_path / "toy" / "eval-policy.json").read_text())
    assert len(learned["results"]) == 3
    meta = json.loads((tmp_path / "toy" / "policy" / "meta.json").read_text())
    assert meta["optimizer_steps"] == 32 and meta["complete"]
