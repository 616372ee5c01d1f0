"""scripts/paper_exact_smoke.py (run on the device by scripts/gpu_smoke.sh) on the CPU: every stage
of the paper-exact recipe runs at toy size, and its summary says what ran (no 4-bit here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from reference_models import require_reference_models

ROOT = Path(__file__).resolve().parents[1]


def test_paper_exact_smoke_runs_on_the_cpu(tmp_path, capsys):
    require_reference_models()
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import paper_exact_smoke
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    out = tmp_path / "summary.json"
    code = paper_exact_smoke.main(
        ["--allow-cpu", "--out", str(tmp_path / "run"), "--json", str(out)]
    )
    assert code == 0, capsys.readouterr().err[-2000:]
    summary = json.loads(out.read_text())
    assert summary["device"] == "cpu" and summary["load_in_4bit"] is False
    assert summary["train"]["optimizer_steps"] == 8
    assert summary["pretrain"]["states"] > 0
    for name in ("confidence", "learned"):
        assert 0.0 <= summary["eval"][name] <= 1.0
    # without CUDA and without --allow-cpu the script refuses at once
    if not torch.cuda.is_available():
        assert paper_exact_smoke.main(["--out", str(tmp_path / "x")]) == 1
