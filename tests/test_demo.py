"""`upo demo`'s section for the other shipped tasks (the Sudoku part is exercised by `make demo`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from upo import assets, demo

REPO = Path(__file__).resolve().parents[1]


def test_other_task_tables_cover_every_rule_and_the_policy(monkeypatch, capsys):
    task, mdm, policy, data = demo.OTHER_TASKS[0]
    if assets.shipped("checkpoints", mdm) is None:
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
    assert (policy in table) == (assets.shipped("checkpoints", policy) is not None)
    assert "| confidence |" in capsys.readouterr().out


def test_sudoku_demo_writes_the_report_and_says_where(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(demo, "OTHER_TASKS", [])  # the other tasks are tested above
    out = tmp_path / "report"
    assert demo.run_demo(out=str(out), n=4, threads=1, search=True) == 0
    for name in demo.OUTPUT_FILES:
        assert (out / name).is_file(), name
        if name.endswith(".png"):
            assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    report = (out / "report.md").read_text()
    for name in demo.OUTPUT_FILES:
        if name.endswith(".png"):
            assert f"]({name})" in report, name  # every figure is in the report
    for policy in [*demo.RULES, "sudoku9-policy", demo.FEWER_CALLS, demo.SEARCH]:
        assert f"| {policy} |" in report
    assert "Here max-confidence solved" in report and "{seconds}" not in report
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-2].startswith("upo demo took") and printed[-2].endswith(
        "The report, with its figures:"
    )
    assert printed[-1].split()[0] == str(out / "report.md")


def test_the_search_is_left_out_unless_asked(monkeypatch, tmp_path):
    """The search costs about four greedy decodes: off by default, so the demo stays within its
    time on CPUs without native bf16 (issue 29). Run from an empty directory: the shipped
    checkpoints are found by name, and the report lands where the user stands."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "OTHER_TASKS", [])
    assert demo.run_demo(n=2, threads=1) == 0
    report = (tmp_path / "demo-report" / "report.md").read_text()
    assert "MDM `sudoku9-mdm`" in report and "| sudoku9-policy |" in report
    assert f"| {demo.FEWER_CALLS} |" in report and f"| {demo.SEARCH} |" not in report
