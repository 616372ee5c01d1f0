"""Puzzle file loaders: every format, and one clear line for every kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upo.errors import UpoError
from upo.tasks.sudoku.generate import generate_puzzles
from upo.tasks.sudoku.grid import SPECS, conflicts, decode, encode
from upo.tasks.sudoku.io import _clashes, load_puzzles, write_jsonl
from upo.tasks.sudoku.solver import solve

S4 = SPECS["sudoku4"]
S9 = SPECS["sudoku9"]
# A unique 4x4 puzzle and its solution.
P4, A4 = "1000002000300004", "1243342141322314"


@pytest.fixture(scope="module")
def pairs():
    """Unique puzzles with their solutions, as strings, per size."""
    out = {}
    for name, blanks in (("sudoku4", (6, 10)), ("sudoku6", (14, 20)), ("sudoku9", (40, 50))):
        made = generate_puzzles(SPECS[name], 5, blanks, seed=3)
        out[name] = [(decode(p), decode(s)) for p, s in made]
    return out


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def load_error(path, **kwargs) -> str:
    with pytest.raises(UpoError) as err:
        load_puzzles(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_fixture_puzzle_is_unique():
    (found,) = solve(S4, encode(P4), limit=2)
    assert decode(found) == A4


# --- each format ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sudoku4", "sudoku6", "sudoku9"])
def test_write_jsonl_round_trip(tmp_path, pairs, name):
    puzzles = np.stack([np.array([int(c) for c in p]) for p, _ in pairs[name]])
    solutions = np.stack([np.array([int(c) for c in s]) for _, s in pairs[name]])
    path = tmp_path / "sub" / "data.jsonl"
    write_jsonl(path, puzzles, solutions)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["puzzle"], r["solution"]) for r in rows] == pairs[name]
    assert [r["blanks"] for r in rows] == [p.count("0") for p, _ in pairs[name]]
    assert sorted(x.name for x in path.parent.iterdir()) == ["data.jsonl"]  # no temp file left
    data = load_puzzles(path, check_unique=True)
    assert data.spec == SPECS[name] and data.format == "jsonl" and data.skipped == 0
    assert data.puzzles.dtype == np.int64 and data.solutions.dtype == np.int64
    assert np.array_equal(data.puzzles, puzzles) and np.array_equal(data.solutions, solutions)
    assert data.blanks.tolist() == [r["blanks"] for r in rows]
    assert len(data) == len(rows)


def test_jsonl_extra_keys_blank_lines_crlf_and_bom(tmp_path, pairs):
    rows = [
        {"puzzle": p, "solution": s, "blanks": 3, "id": i}
        for i, (p, s) in enumerate(pairs["sudoku9"])
    ]
    text = "\ufeff\n" + "\r\n\r\n".join(json.dumps(r) for r in rows) + "\r\n\n"
    data = load_puzzles(write(tmp_path, "x.jsonl", text), S9)
    assert [decode(p) for p in data.puzzles] == [p for p, _ in pairs["sudoku9"]]


def test_csv_puzzle_solution_4x4(tmp_path, pairs):
    text = "Puzzle,Solution\n" + "".join(f"{p},{s}\n" for p, s in pairs["sudoku4"])
    data = load_puzzles(write(tmp_path, "sudoku.csv", text))
    assert data.format == "csv" and data.spec == S4
    assert [(decode(p), decode(s)) for p, s in zip(data.puzzles, data.solutions)] == pairs[
        "sudoku4"
    ]


def test_csv_quizzes_solutions_9x9_any_extension(tmp_path, pairs):
    text = "quizzes,solutions\n" + "".join(f"{p},{s}\n" for p, s in pairs["sudoku9"])
    data = load_puzzles(write(tmp_path, "sudoku.txt", text), check_unique=True)
    assert data.format == "csv" and data.spec == S9 and len(data) == 5


def test_csv_extra_columns_and_quotes(tmp_path):
    text = 'id,"puzzle",difficulty,solution\n7,"' + P4 + '",easy,' + A4 + "\n"
    data = load_puzzles(write(tmp_path, "x.csv", text))
    assert decode(data.solutions[0]) == A4


def test_plain_text_solved_by_solver(tmp_path, pairs):
    lines = [p if i % 2 else p.replace("0", ".") for i, (p, _) in enumerate(pairs["sudoku9"])]
    data = load_puzzles(write(tmp_path, "puzzles.txt", "\n".join(lines) + "\n\n"))
    assert data.format == "text" and data.spec == S9
    assert [decode(s) for s in data.solutions] == [s for _, s in pairs["sudoku9"]]
    assert [decode(p) for p in data.puzzles] == [p for p, _ in pairs["sudoku9"]]


def test_spec_inferred_for_6x6(tmp_path, pairs):
    data = load_puzzles(write(tmp_path, "p.txt", "\n".join(p for p, _ in pairs["sudoku6"])))
    assert data.spec == SPECS["sudoku6"]


def test_progress_called_per_line(tmp_path, pairs):
    ticks = []
    path = write(tmp_path, "p.txt", "\n".join(p for p, _ in pairs["sudoku4"]))
    load_puzzles(path, progress=ticks.append)
    assert sum(ticks) == 5


# --- bad input: one line naming the file, the line and the reason ---------------------------


def row(puzzle, solution=A4) -> str:
    return json.dumps({"puzzle": puzzle, "solution": solution})


GOOD = row(P4)
# name: (file text, bad line, expected reason)
BAD_CASES = {
    "wrong length": (GOOD + "\n" + row(P4[:-1]), 2, "15 characters, expected 16"),
    "illegal character": (row("x" + P4[1:]), 1, "illegal character 'x'"),
    "digit too big": (row("5" + P4[1:]), 1, "illegal character '5'"),
    "row clash": (row("1001" + P4[4:]), 1, "digit 1 appears more than once in row 1"),
    "column clash": (row(P4[:4] + "1" + P4[5:]), 1, "digit 1 appears more than once in column 1"),
    "box clash": (row("10000100" + P4[8:]), 1, "digit 1 appears more than once in box 1"),
    "invalid solution": (row("0" * 16, A4[1::-1] + A4[2:]), 1, "solution is not a valid grid"),
    "blank in solution": (row(P4, "0" + A4[1:]), 1, "solution has illegal character '0'"),
    "contradicts givens": (
        row("2" + P4[1:]),
        1,
        "contradicts the puzzle at row 1, column 1 (puzzle gives 2, solution has 1)",
    ),
    "malformed json": (GOOD + "\n\n" + '{"puzzle": "12', 3, "malformed JSON"),
    "not an object": ("[1, 2]", 1, "expected a JSON object, got list"),
    "missing solution": (json.dumps({"puzzle": P4}), 1, "missing key 'solution'"),
    "missing puzzle": (json.dumps({"quiz": P4, "solution": A4}), 1, "missing key 'puzzle'"),
    "puzzle not a string": (row(int(P4)), 1, "'puzzle' must be a string"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_jsonl_lines(tmp_path, case):
    text, line, reason = BAD_CASES[case]
    path = write(tmp_path, "bad.jsonl", text + "\n")
    message = load_error(path)
    assert f": line {line}: " in message and reason in message


def test_plain_text_no_solution_and_several_solutions(tmp_path):
    path = write(tmp_path, "p.txt", P4 + "\n" + "1230000000040000" + "\n")
    assert "line 2: puzzle has no solution" in load_error(path)
    path = write(tmp_path, "p.txt", "\n" + "1000" + "0" * 12 + "\n")
    assert "line 2: puzzle has more than one solution" in load_error(path)


def test_check_unique_only_when_asked_for_files_with_solutions(tmp_path):
    # One given leaves many completions; the stated solution is one of them.
    path = write(tmp_path, "x.jsonl", json.dumps({"puzzle": "1" + "0" * 15, "solution": A4}))
    assert len(load_puzzles(path)) == 1
    assert "line 1: puzzle has more than one solution" in load_error(path, check_unique=True)


# "1" + 15 blanks: the stated solution A4 is one of many completions.
SEVERAL = "1" + "0" * 15


def test_several_solutions_are_counted_through_the_whole_file(tmp_path):
    lines = [GOOD, row(SEVERAL), GOOD, row(SEVERAL), row(SEVERAL)]
    path = write(tmp_path, "x.jsonl", "\n".join(lines) + "\n")
    message = load_error(path, check_unique=True)
    assert message == (
        f"{path}: line 2: puzzle has more than one solution (3 of 5 puzzles do; upo's sudoku4 "
        "needs unique puzzles; the UPO paper's protocol, --task sudoku4-paper, scores them "
        "against the given Solution)"
    )
    data = load_puzzles(path, check_unique=True, skip_invalid=True)
    assert len(data) == 2 and data.skipped == 3
    assert (data.multiple, data.first_multiple) == (3, 2)
    # Plain text states no solution, so the paper's protocol is no way out there.
    path = write(tmp_path, "x.txt", P4 + "\n" + SEVERAL + "\n")
    assert load_error(path).endswith("(1 of 2 puzzles do; upo's sudoku4 needs unique puzzles)")


def test_allow_multiple_keeps_the_stated_solution(tmp_path):
    path = write(tmp_path, "x.jsonl", jsonl([{"puzzle": P4, "solution": A4}] * 2))
    path.write_text(path.read_text() + row(SEVERAL) + "\n")
    data = load_puzzles(path, check_unique=True, allow_multiple=True)
    assert len(data) == 3 and data.skipped == 0
    assert (data.multiple, data.first_multiple) == (1, 3)
    assert decode(data.solutions[2]) == A4
    unique = load_puzzles(write(tmp_path, "u.jsonl", GOOD + "\n"), allow_multiple=True)
    assert (unique.multiple, unique.first_multiple) == (0, None)
    # Without a stated solution there is nothing to keep.
    path = write(tmp_path, "x.txt", SEVERAL + "\n")
    message = load_error(path, allow_multiple=True)
    assert "line 1: puzzle has more than one solution and the line gives none to keep" in message


def test_length_must_match_given_spec_or_a_known_size(tmp_path):
    path = write(tmp_path, "p.txt", P4 + "\n")
    assert "line 1: puzzle has 16 characters, expected 81" in load_error(path, spec=S9)
    path = write(tmp_path, "p.txt", "0" * 20 + "\n")
    assert "line 1: puzzle has 20 characters, expected one of 16, 36, 81" in load_error(path)


def test_file_level_errors(tmp_path):
    assert load_error(tmp_path / "missing.jsonl").endswith("no such file")
    assert "empty file" in load_error(write(tmp_path, "e.jsonl", ""))
    assert "empty file" in load_error(write(tmp_path, "e.txt", "\n  \n\n"))
    assert "header but no puzzles" in load_error(write(tmp_path, "h.csv", "Puzzle,Solution\n"))
    message = load_error(write(tmp_path, "u.csv", "a,b\n1,2\n"))
    assert "line 1: CSV header 'a,b' lacks a puzzle and a solution column" in message
    message = load_error(write(tmp_path, "f.csv", f"Puzzle,Solution\n{P4},{A4},7\n"))
    assert "line 2: expected 2 comma-separated fields, found 3" in message
    (tmp_path / "dir.jsonl").mkdir()
    assert "is a directory" in load_error(tmp_path / "dir.jsonl")
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe\x00")
    assert "not a text file" in load_error(path)


def test_skip_invalid_counts_and_describes(tmp_path):
    lines = [GOOD, "{oops", json.dumps({"puzzle": "1001" + P4[4:], "solution": A4}), "", GOOD]
    path = write(tmp_path, "mixed.jsonl", "\n".join(lines) + "\n")
    data = load_puzzles(path, skip_invalid=True)
    assert len(data) == 2 and data.skipped == 2
    assert [e.split(": ")[1] for e in data.errors] == ["line 2", "line 3"]
    assert "line 2" in load_error(path)  # without skip_invalid the first bad line stops loading


def test_skip_invalid_with_nothing_valid_is_an_error(tmp_path):
    path = write(tmp_path, "bad.txt", "0" * 16 + "\n" + "11" + "0" * 14 + "\n")
    message = load_error(path, skip_invalid=True)
    assert "no valid puzzles (2 bad lines; first: line 1: puzzle has more than one" in message


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(SPECS)), st.data())
def test_fast_clash_check_agrees_with_conflicts(name, data):
    spec = SPECS[name]
    cells = st.lists(st.integers(0, spec.n), min_size=spec.cells, max_size=spec.cells)
    tokens = np.array(data.draw(cells), dtype=np.int64)
    assert _clashes(spec, tokens) == conflicts(spec, tokens)
