"""`upo demo`'s section for the other shipped tasks (the Sudoku part is exercised by `make demo`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from upo import demo

REPO = Path(__file__).resolve().parents[1]


def test_other_task_tables_cover_every_rule_and_the_policy(monkeypatch, capsys):
    task, mdm, policy, data = demo.OTHER_TASKS[0]
    if not (REPO / mdm).is_dir():
        pytest.fail(f"{mdm}: the shipped {task} MDM is missing")
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(
        demo,
        "OTHER_TASKS",
        [(task, mdm, policy, data), ("zebra4", "no/such/mdm", "no/such/policy", data)],
    )
    sections = demo.other_task_tables(n=3, batch_size=2)
    assert len(sections) == 1  # the task without its MDM is left out
    table = sections[0]
    assert f"the first 3 items of `{data}`" in table
    for rule in demo.OTHER_RULES:
        assert f"| {rule} |" in table
    assert (Path(policy).name in table) == (REPO / policy).is_dir()
    assert "| confidence |" in capsys.readouterr().out
