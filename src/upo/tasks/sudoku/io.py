"""Load Sudoku puzzle files in the formats people actually have, and write our JSONL.

Formats (detected from the content, with the extension as a tie-breaker):
- our JSONL: one `{"puzzle": "...", "solution": "..."}` object per line (extra keys allowed);
- CSV with a header naming a puzzle and a solution column: `Puzzle,Solution` (the public 4x4
  format) or `quizzes,solutions` (the public 81-character format);
- plain text: one puzzle per line, `0` or `.` for blank; the solver supplies the solution.

Every bad input is a UpoError naming the file, the line and the reason, so `upo data check` and
every command that reads data report problems the same way. Line numbers count from 1 and include
header and blank lines, so they match what an editor shows. The one exception to stopping at the
first bad line: puzzles with several solutions are counted through the whole file first, since a
file that has some (the UPO paper's 4x4 test set) usually has many.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import UpoError
from ...io_utils import atomic_write_text
from ..records import BadLine, ReadFile, json_object, read_lines, string_field
from .grid import MASK, SPECS, SudokuSpec, conflicts, decode, parse_chars
from .solver import solve

# Accepted CSV header names (compared case-insensitively).
PUZZLE_COLUMNS = ("puzzle", "puzzles", "quizzes", "quiz")
SOLUTION_COLUMNS = ("solution", "solutions")


@dataclass
class LoadResult:
    """Puzzles and their solutions as [N, cells] int64 tokens (0 = blank)."""

    puzzles: np.ndarray
    solutions: np.ndarray
    skipped: int
    spec: SudokuSpec
    format: str = "jsonl"
    errors: list[str] = field(default_factory=list)  # messages of the skipped lines
    # Puzzles with more than one solution found while proving uniqueness (accepted with
    # `allow_multiple`, else skipped or refused), and the line of the first.
    multiple: int = 0
    first_multiple: int | None = None

    def __len__(self) -> int:
        return len(self.puzzles)

    @property
    def blanks(self) -> np.ndarray:
        return (self.puzzles == MASK).sum(1)


class _BadLine(BadLine):
    """A problem with one line; turned into a UpoError (or a skip) by the caller."""


class _SeveralSolutions(_BadLine):
    """A puzzle with more than one solution where only unique puzzles are accepted."""


def _clashes(spec: SudokuSpec, tokens: np.ndarray) -> list[tuple[str, int, int]]:
    """grid.conflicts, behind a one-bincount test: valid lines (nearly all) skip its slow loop."""
    vals = tokens[spec.units] + (spec.n + 1) * np.arange(3 * spec.n)[:, None]
    counts = np.bincount(vals.reshape(-1), minlength=3 * spec.n * (spec.n + 1))
    if counts.reshape(3 * spec.n, spec.n + 1)[:, 1:].max() <= 1:
        return []
    return conflicts(spec, tokens)


def _conflict_text(found: list[tuple[str, int, int]]) -> str:
    kind, unit, digit = found[0]
    return f"digit {digit} appears more than once in {kind} {unit + 1}"


def _detect_format(path: Path, first: str) -> str:
    head = first.strip()
    if head.startswith("{"):
        return "jsonl"
    cols = [c.strip().strip('"').lower() for c in head.split(",")]
    if any(c in PUZZLE_COLUMNS for c in cols) and any(c in SOLUTION_COLUMNS for c in cols):
        return "csv"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "text"


def _csv_row(line: str) -> list[str]:
    try:
        return next(csv.reader([line]))
    except csv.Error as err:  # e.g. a field over the csv module's 131,072-character limit
        raise _BadLine(f"unreadable CSV ({err})") from None


def _csv_columns(header: str) -> tuple[int, int, int]:
    """(puzzle column, solution column, number of columns) from a CSV header line."""
    cols = [c.strip().lower() for c in _csv_row(header)]
    puzzle = next((i for i, c in enumerate(cols) if c in PUZZLE_COLUMNS), None)
    solution = next((i for i, c in enumerate(cols) if c in SOLUTION_COLUMNS), None)
    if puzzle is None or solution is None:
        raise _BadLine(
            f"CSV header {header.strip()!r} lacks a puzzle and a solution column "
            "(expected 'Puzzle,Solution' or 'quizzes,solutions')"
        )
    return puzzle, solution, len(cols)


def _record(fmt: str, line: str, columns: tuple[int, int, int] | None) -> tuple[str, str | None]:
    """(puzzle text, solution text or None) from one non-blank data line."""
    if fmt == "jsonl":  # the shared reader also turns too deep nesting into a BadLine
        obj = json_object(line)
        return string_field(obj, "puzzle"), string_field(obj, "solution")
    if fmt == "csv":
        puzzle_col, solution_col, ncols = columns
        row = _csv_row(line)
        if len(row) != ncols:
            raise _BadLine(f"expected {ncols} comma-separated fields, found {len(row)}")
        return row[puzzle_col].strip(), row[solution_col].strip()
    return line.strip(), None


def _check(
    puzzle_text: str,
    solution_text: str | None,
    spec: SudokuSpec,
    check_unique: bool,
    allow_multiple: bool = False,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate one record; returns (puzzle, solution, has several solutions) or raises _BadLine
    with the reason. Several solutions are a _SeveralSolutions error unless `allow_multiple` and
    the record gives the solution to keep."""
    try:
        puzzle = parse_chars(puzzle_text, spec, "puzzle", allow_blank=True)
    except ValueError as err:
        raise _BadLine(str(err)) from None
    found = _clashes(spec, puzzle)
    if found:
        raise _BadLine(f"puzzle's givens break the rules: {_conflict_text(found)}")
    solution = None
    if solution_text is not None:
        solution = _check_solution(solution_text, puzzle, spec)
    several = False
    if solution is None or check_unique:
        found_solutions = solve(spec, puzzle, limit=2)
        if not found_solutions:
            raise _BadLine("puzzle has no solution")
        several = len(found_solutions) > 1
        if several and solution is None and allow_multiple:
            raise _BadLine("puzzle has more than one solution and the line gives none to keep")
        if several and not allow_multiple:
            raise _SeveralSolutions("puzzle has more than one solution")
        # A valid solution that keeps the givens of a unique puzzle is that puzzle's solution.
        solution = found_solutions[0] if solution is None else solution
    return puzzle, solution, several


def check_record(puzzle_text: str, solution_text: str, spec: SudokuSpec) -> str | None:
    """Why one puzzle/solution record is invalid (None when it is valid), judged as
    `load_puzzles(..., allow_multiple=True)` judges a line: for records that come from elsewhere
    than a puzzle file (a Parquet file, a `datasets` split). A valid stated solution proves the
    puzzle solvable, so no solver runs."""
    try:
        _check(puzzle_text, solution_text, spec, check_unique=False, allow_multiple=True)
    except BadLine as err:
        return str(err)
    return None


def _check_solution(solution_text: str, puzzle: np.ndarray, spec: SudokuSpec) -> np.ndarray:
    """The stated solution's tokens, once it is a valid grid that keeps the puzzle's givens."""
    try:
        solution = parse_chars(solution_text, spec, "solution", allow_blank=False)
    except ValueError as err:
        raise _BadLine(str(err)) from None
    found = _clashes(spec, solution)
    if found:  # complete with no repeats means valid, so conflicts explain any invalid grid
        raise _BadLine(f"solution is not a valid grid: {_conflict_text(found)}")
    differ = np.flatnonzero((puzzle != MASK) & (puzzle != solution))
    if differ.size:
        cell = int(differ[0])
        raise _BadLine(
            f"solution contradicts the puzzle at row {cell // spec.n + 1}, column "
            f"{cell % spec.n + 1} (puzzle gives {puzzle[cell]}, solution has {solution[cell]})"
        )
    return solution


def _several_solutions_error(
    path: Path, spec: SudokuSpec, fmt: str, lines: list[int], total: int
) -> UpoError:
    """One line for a file refused for puzzles with several solutions: how many, and the first."""
    why = f"{len(lines)} of {total} puzzles do; upo's {spec.name} needs unique puzzles"
    if spec.name == "sudoku4" and fmt != "text":
        # Such files come from the UPO paper, whose 4x4 test set has many; its protocol scores
        # them against the given Solution instead.
        why += (
            "; the UPO paper's protocol, --task sudoku4-paper, scores them against the given "
            "Solution"
        )
    return UpoError(f"{path}: line {lines[0]}: puzzle has more than one solution ({why})")


def load_puzzles(
    path: str | Path | ReadFile,
    spec: SudokuSpec | None = None,
    skip_invalid: bool = False,
    check_unique: bool = False,
    progress: Callable[[int], object] | None = None,
    allow_multiple: bool = False,
) -> LoadResult:
    """Read and validate a puzzle file (see the module docstring for the formats).

    `spec` defaults to the size implied by the first puzzle's length. Plain-text puzzles are always
    solved, which proves them unique; other formats are proved unique only when `check_unique`.
    With `skip_invalid`, bad lines are counted in `skipped` (and described in `errors`) instead of
    raising. `progress(k)` is called after every k data lines, for progress bars on big files.

    Puzzles found to have several solutions are counted in `multiple`. With `allow_multiple` they
    are kept with their stated solution; otherwise they are skipped with `skip_invalid`, or the
    whole file is read before one error names the first and counts them all.
    """
    lines = read_lines(path, "puzzles")  # a ReadFile gives the lines it already holds
    path = Path(str(path))
    fmt = _detect_format(path, lines[0][1])
    columns = None
    if fmt == "csv":
        try:
            columns = _csv_columns(lines[0][1])
        except _BadLine as err:
            raise UpoError(f"{path}: line {lines[0][0]}: {err}") from None
        lines = lines[1:]
        if not lines:
            raise UpoError(f"{path}: CSV file has a header but no puzzles")

    puzzles, solutions, errors = [], [], []
    several_lines: list[int] = []  # lines whose puzzle has more than one solution
    for no, line in lines:
        try:
            puzzle_text, solution_text = _record(fmt, line, columns)
            if spec is None:
                try:
                    spec = next(s for s in SPECS.values() if s.cells == len(puzzle_text))
                except StopIteration:
                    sizes = ", ".join(str(s.cells) for s in SPECS.values())
                    raise _BadLine(
                        f"puzzle has {len(puzzle_text)} characters, expected one of {sizes}"
                    ) from None
            puzzle, solution, several = _check(
                puzzle_text, solution_text, spec, check_unique, allow_multiple
            )
        except _SeveralSolutions as err:
            several_lines.append(no)
            if skip_invalid:
                errors.append(f"{path}: line {no}: {err}")
        except BadLine as err:
            message = f"{path}: line {no}: {err}"
            if not skip_invalid:
                raise UpoError(message) from None
            errors.append(message)
        else:
            puzzles.append(puzzle)
            solutions.append(solution)
            if several:
                several_lines.append(no)
        if progress is not None:
            progress(1)

    if several_lines and not (allow_multiple or skip_invalid):
        total = len(puzzles) + len(several_lines)  # every other line was valid, or we raised
        raise _several_solutions_error(path, spec, fmt, several_lines, total)
    if not puzzles:
        first = errors[0].removeprefix(f"{path}: ")
        raise UpoError(f"{path}: no valid puzzles ({len(errors)} bad lines; first: {first})")
    return LoadResult(
        puzzles=np.stack(puzzles).astype(np.int64),
        solutions=np.stack(solutions).astype(np.int64),
        skipped=len(errors),
        spec=spec,
        format=fmt,
        errors=errors,
        multiple=len(several_lines),
        first_multiple=several_lines[0] if several_lines else None,
    )


def write_jsonl(path: str | Path, puzzles: np.ndarray, solutions: np.ndarray) -> None:
    """Write `{"puzzle", "solution", "blanks"}` rows atomically: a reader never sees half a file."""
    puzzles, solutions = np.asarray(puzzles), np.asarray(solutions)
    if puzzles.shape != solutions.shape:
        raise ValueError(f"puzzles {puzzles.shape} and solutions {solutions.shape} differ")
    rows = [
        json.dumps({"puzzle": decode(p), "solution": decode(s), "blanks": int((p == MASK).sum())})
        for p, s in zip(puzzles, solutions)
    ]
    atomic_write_text(path, "".join(r + "\n" for r in rows))
