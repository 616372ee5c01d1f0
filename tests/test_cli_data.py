"""`upo data make` / `upo data check` driven the way a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from upo.cli import main
from upo.tasks.sudoku.grid import SPECS, encode
from upo.tasks.sudoku.solver import count_solutions


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, *fragments: str) -> None:
    """Exit-2 failures print exactly one line: no traceback, no usage dump."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("upo: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def puzzles_of(path) -> list[str]:
    return [json.loads(line)["puzzle"] for line in path.read_text().splitlines()]


def test_make_then_check(tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    code, _, err = run(capsys, "data", "make", "sudoku9", "--n", 6, "--seed", 1, "--out", out)
    assert code == 0
    assert "wrote" in err and "6 sudoku9 puzzles" in err and "blanks 5" in err  # default 50-58
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all(50 <= r["blanks"] <= 58 for r in rows)
    assert all(r["blanks"] == r["puzzle"].count("0") for r in rows)
    code, stdout, _ = run(capsys, "data", "check", out, "--task", "sudoku9")
    assert code == 0
    assert stdout.startswith(f"{out}: 6 valid puzzles (blanks ") and "; sudoku9" in stdout


def test_make_is_deterministic_for_a_seed(tmp_path, capsys):
    paths = [tmp_path / f"{k}.jsonl" for k in "abc"]
    for path, seed in zip(paths, (4, 4, 5)):
        args = ("data", "make", "sudoku6", "--n", 20, "--seed", seed, "--out", path)
        assert run(capsys, *args)[0] == 0
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_exclude_keeps_train_and_test_disjoint(tmp_path, capsys):
    test, train, plain = (tmp_path / f"{k}.jsonl" for k in ("test", "train", "plain"))
    common = ("--seed", 1, "--blanks", "6-9")
    assert run(capsys, "data", "make", "sudoku4", "--n", 30, *common, "--out", test)[0] == 0
    assert run(capsys, "data", "make", "sudoku4", "--n", 200, *common, "--out", plain)[0] == 0
    args = ("data", "make", "sudoku4", "--n", 200, *common, "--out", train, "--exclude", test)
    assert run(capsys, *args)[0] == 0
    # The same seed replays the same stream, so without --exclude the test set leaks in...
    assert set(puzzles_of(test)) <= set(puzzles_of(plain))
    # ...and with it, never.
    train_puzzles = puzzles_of(train)
    assert len(set(train_puzzles)) == 200 and not set(train_puzzles) & set(puzzles_of(test))


def test_single_blank_count_and_difficulty_alias(tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    code, _, err = run(
        capsys, "data", "make", "sudoku4", "--n", 5, "--difficulty", 10, "--out", out
    )
    assert code == 0 and "blanks 10-10, mean 10.0" in err
    assert all(p.count("0") == 10 for p in puzzles_of(out))


def test_make_overwrites_atomically(tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    out.write_text("old\n")
    assert run(capsys, "data", "make", "sudoku4", "--n", 3, "--out", out)[0] == 0
    assert len(puzzles_of(out)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (("--n", "0"), ["--n '0'", "at least 1"]),
        (("--n", "ten"), ["--n 'ten'", "whole number"]),
        (("--n", "3", "--blanks", "a-b"), ["--blanks 'a-b'", "range like 50-58"]),
        (("--n", "3", "--blanks", "1-2-3"), ["--blanks '1-2-3'"]),
        (("--n", "3", "--blanks", "9-5"), ["range is empty"]),
        (("--n", "3", "--blanks", "0-5"), ["1 to 12 blanks"]),
        (("--n", "3", "--blanks", "13"), ["sudoku4 puzzles can have 1 to 12 blanks"]),
        (("--n", "3", "--max-attempts", "0"), ["--max-attempts"]),
    ],
)
def test_make_bad_arguments(tmp_path, capsys, extra, fragments):
    out = tmp_path / "p.jsonl"
    code, _, err = run(capsys, "data", "make", "sudoku4", *extra, "--out", out)
    assert code == 2
    assert_one_error_line(err, *fragments)
    assert not out.exists()


def test_make_bad_exclude_file(tmp_path, capsys):
    nine = tmp_path / "nine.jsonl"
    assert run(capsys, "data", "make", "sudoku9", "--n", 1, "--blanks", 40, "--out", nine)[0] == 0
    args = ("data", "make", "sudoku4", "--n", 3, "--out", tmp_path / "p.jsonl", "--exclude")
    code, _, err = run(capsys, *args, nine)
    assert code == 2
    assert_one_error_line(err, str(nine), "line 1", "81 characters, expected 16")
    code, _, err = run(capsys, *args, tmp_path / "missing.jsonl")
    assert code == 2
    assert_one_error_line(err, "missing.jsonl: no such file")


def test_make_gives_up_when_puzzles_run_out(tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    args = ("data", "make", "sudoku4", "--n", 10_000, "--blanks", 1, "--max-attempts", 20)
    code, _, err = run(capsys, *args, "--out", out)
    assert code == 2
    # The progress bar shares stderr; the error is the last line.
    last = err.strip().splitlines()[-1]
    assert last.startswith("upo: error: gave up after 20 consecutive draws")
    assert "distinct sudoku4 puzzles with 1-1 blanks" in last and "Traceback" not in err
    assert not out.exists()


def test_check_reports_first_bad_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"puzzle": "1000002000300004", "solution": "1243342141322314"})
    bad = json.dumps({"puzzle": "1001002000300004", "solution": "1243342141322314"})
    path.write_text(f"{good}\n\n{bad}\n{{broken\n")
    code, out, err = run(capsys, "data", "check", path, "--task", "sudoku4")
    assert code == 2 and out == ""
    assert_one_error_line(err, f"{path}: line 3:", "digit 1 appears more than once in row 1")

    code, out, _ = run(capsys, "data", "check", path, "--skip-invalid")
    assert code == 0
    assert out.startswith(f"{path}: 1 valid puzzles (blanks 12-12, mean 12.0); sudoku4")
    assert "2 invalid lines skipped, first: line 3:" in out


def test_check_uniqueness_wrong_task_and_missing_file(tmp_path, capsys):
    path = tmp_path / "p.txt"
    path.write_text("1" + "0" * 15 + "\n")
    code, _, err = run(capsys, "data", "check", path)
    assert code == 2
    assert_one_error_line(err, "line 1: puzzle has more than one solution")
    path.write_text("1000002000300004\n")
    code, _, err = run(capsys, "data", "check", path, "--task", "sudoku9")
    assert code == 2
    assert_one_error_line(err, "line 1: puzzle has 16 characters, expected 81")
    code, _, err = run(capsys, "data", "check", tmp_path / "nope.csv")
    assert code == 2
    assert_one_error_line(err, "nope.csv: no such file")


# -- puzzles with several solutions (the UPO paper's 4x4 test set has 124 of 500) -------------

UNIQUE = ("1000002000300004", "1243342141322314")
TEXT_FIXTURE = Path(__file__).parent / "fixtures" / "text" / "sudoku4.csv"


def several_solutions(solution: str, order) -> str:
    """Blank the cells of `solution` in `order` until the puzzle has more than one solution: the
    solution stays one of them, as in the paper's file."""
    spec = SPECS["sudoku4"]
    cells = list(solution)
    for i in order:
        cells[i] = "0"
        puzzle = "".join(cells)
        if count_solutions(spec, encode(puzzle), limit=2) == 2:
            return puzzle
    raise AssertionError("never reached two solutions")


def paper_csv(tmp_path, rows) -> Path:
    path = tmp_path / "paper.csv"
    path.write_text("Puzzle,Solution\n" + "".join(f"{p},{s}\n" for p, s in rows))
    return path


@pytest.fixture
def mixed_csv(tmp_path):
    """Unique puzzles at lines 2 and 5, puzzles with several solutions at lines 3 and 4."""
    solution = UNIQUE[1]
    rows = [
        UNIQUE,
        (several_solutions(solution, range(16)), solution),
        (several_solutions(solution, reversed(range(16))), solution),
        UNIQUE,
    ]
    return paper_csv(tmp_path, rows)


@pytest.mark.parametrize("task", ["sudoku4-paper", "sudoku4-text"])
def test_check_text_sudoku_accepts_and_counts_several_solutions(mixed_csv, capsys, task):
    code, out, err = run(capsys, "data", "check", mixed_csv, "--task", task)
    assert code == 0 and err == ""
    assert out.strip() == (
        f"{mixed_csv}: 4 valid puzzles (blanks 7-12, mean 9.5); {task}; 2 have more than one "
        "solution (first: line 3): cell accuracy against the given Solution undercounts them, "
        "solve_rate counts any valid completion"
    )


def test_check_grid_task_counts_every_puzzle_with_several_solutions(mixed_csv, capsys):
    code, out, err = run(capsys, "data", "check", mixed_csv, "--task", "sudoku4")
    assert code == 2 and out == ""
    assert_one_error_line(
        err,
        f"{mixed_csv}: line 3: puzzle has more than one solution (2 of 4 puzzles do; "
        "upo's sudoku4 needs unique puzzles; the UPO paper's protocol, --task sudoku4-paper, "
        "scores them against the given Solution)",
    )
    # Without --task the size comes from the first puzzle: the same refusal.
    code, _, err = run(capsys, "data", "check", mixed_csv)
    assert code == 2
    assert_one_error_line(err, "line 3: puzzle has more than one solution (2 of 4 puzzles do")
    # --skip-invalid skips them as before.
    code, out, _ = run(capsys, "data", "check", mixed_csv, "--task", "sudoku4", "--skip-invalid")
    assert code == 0
    assert out.startswith(f"{mixed_csv}: 2 valid puzzles (blanks 12-12, mean 12.0); sudoku4; ")
    assert "2 invalid lines skipped, first: line 3: puzzle has more than one solution" in out


def test_check_text_sudoku_fixture_and_a_file_of_unique_puzzles(tmp_path, capsys):
    code, out, _ = run(capsys, "data", "check", TEXT_FIXTURE, "--task", "sudoku4-paper")
    assert code == 0
    assert out.startswith(f"{TEXT_FIXTURE}: 2 valid puzzles (blanks 8-8, mean 8.0); sudoku4-paper")
    assert "; 1 has more than one solution (first: line 3)" in out
    path = paper_csv(tmp_path, [UNIQUE])
    code, out, _ = run(capsys, "data", "check", path, "--task", "sudoku4-paper")
    assert code == 0 and out.strip().endswith("; sudoku4-paper; none has more than one solution")


def test_check_text_sudoku_still_refuses_bad_lines(tmp_path, capsys):
    puzzle, solution = UNIQUE
    wrong = "1234341221434321"  # a valid grid, but with 1 where the puzzle gives 2
    path = paper_csv(tmp_path, [UNIQUE, (several_solutions(solution, range(16)), solution)])
    path.write_text(path.read_text() + f"{puzzle},{wrong}\n")
    code, out, err = run(capsys, "data", "check", path, "--task", "sudoku4-paper")
    assert code == 2 and out == ""
    assert_one_error_line(
        err, f"{path}: line 4: solution contradicts the puzzle at row 2, column 3"
    )
    code, out, _ = run(capsys, "data", "check", path, "--task", "sudoku4-paper", "--skip-invalid")
    assert code == 0
    assert "2 valid puzzles" in out and "; 1 has more than one solution (first: line 3)" in out
    assert "; 1 invalid lines skipped, first: line 4: solution contradicts" in out
    # A plain-text puzzle states no solution, so one with several has none to score against.
    text = tmp_path / "p.txt"
    text.write_text(several_solutions(solution, range(16)) + "\n")
    code, _, err = run(capsys, "data", "check", text, "--task", "sudoku4-text")
    assert code == 2
    assert_one_error_line(err, "line 1: puzzle has more than one solution and the line gives none")
    nine = tmp_path / "nine.jsonl"
    assert run(capsys, "data", "make", "sudoku9", "--n", 1, "--blanks", 40, "--out", nine)[0] == 0
    code, _, err = run(capsys, "data", "check", nine, "--task", "sudoku4-paper")
    assert code == 2
    assert_one_error_line(err, "line 1: puzzle has 81 characters, expected 16")


def test_check_a_bad_line_after_several_solutions_stops_there(mixed_csv, capsys):
    mixed_csv.write_text(mixed_csv.read_text() + "12,34\n")
    code, _, err = run(capsys, "data", "check", mixed_csv, "--task", "sudoku4")
    assert code == 2
    assert_one_error_line(err, "line 6: puzzle has 2 characters, expected 16")


@pytest.mark.parametrize("task", ["gsm8k", "math500", "countdown"])
def test_check_other_text_tasks_is_one_clear_error(tmp_path, capsys, task):
    path = tmp_path / "data.jsonl"
    path.write_text('{"question": "1 + 1?", "answer": "#### 2"}\n')
    code, out, err = run(capsys, "data", "check", path, "--task", task)
    assert code == 2 and out == ""
    assert_one_error_line(err, f"data check does not validate {task} files")
