"""upo.evaluation is a library: its errors name EvalSettings fields (`pass_at`), not `upo eval`'s
flags (`--pass-at`); the command line words the same errors with its flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from upo.cli import main
from upo.errors import SettingError
from upo.evaluation import EvalSettings, evaluate

ROOT = Path(__file__).resolve().parents[1]
MDM4 = str(ROOT / "checkpoints" / "sudoku4-mdm")
DATA4 = str(ROOT / "data" / "sudoku4-test.jsonl")

# (EvalSettings changes, the library's message starts with, the flags `upo eval` takes for them,
# and its message starts with)
CASES = [
    ({"n": 0}, "n must be at least 1, got 0", ["--n", "0"], "--n must be at least 1, got 0"),
    (
        {"pass_at": 0},
        "pass_at must be at least 1, got 0",
        ["--pass-at", "0"],
        "--pass-at must be at least 1, got 0",
    ),
    (
        {"seed": 2**63},
        f"seed {2**63}: must be a whole number",
        ["--seed", str(2**63)],
        f"--seed {2**63}: must be a whole number",
    ),
    ({"resume": True}, "resume needs json: ", ["--resume"], "--resume needs --json: "),
    (
        {"gen_length": 8},
        "gen_length is for text tasks",
        ["--gen-length", "8"],
        "--gen-length is for text tasks",
    ),
    ({"policies": ","}, "policies is empty", ["--policies", ","], "--policies is empty"),
]


@pytest.mark.parametrize("change, library, flags, command", CASES)
def test_library_names_fields_and_command_names_flags(capsys, change, library, flags, command):
    with pytest.raises(SettingError) as caught:
        evaluate(EvalSettings("sudoku4", MDM4, DATA4, **change))
    assert str(caught.value).startswith(library)
    assert "--" not in str(caught.value)
    argv = ["eval", "--task", "sudoku4", "--mdm", MDM4, "--data", DATA4, "--threads", "1"]
    assert main(argv + flags) == 2
    assert capsys.readouterr().err.startswith(f"upo: error: {command}")


def test_text_task_settings_name_fields():
    with pytest.raises(SettingError, match=r"^gsm8k is a text task: .*\(mdm HUB_ID"):
        evaluate(EvalSettings("gsm8k", MDM4, DATA4))
