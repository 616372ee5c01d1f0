"""Load Sudoku puzzle files in the formats people actually have, and write our JSONL.

Formats (detected from the content, with the extension as a tie-breaker):
- our JSONL: one `{"puzzle": "...", "solution": "..."}` object per line (extra keys allowed);
- CSV with a header naming a puzzle and a solution column: `Puzzle,Solution` (the public 4x4
  format) or `quizzes,solutions` (the public 81-character format);
- plain text: one puzzle per line, `0` or `.` for blank; the solver supplies the solution.

Every bad input is a UpoError naming the file, the line and the reason, so `upo data check` and
every command that reads data report problems the same way. Line numbers count from 1 and include
header and blank lines, so they match what an editor shows.
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
from ..records import read_lines
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

    def __len__(self) -> int:
        return len(self.puzzles)

    @property
    def blanks(self) -> np.ndarray:
        return (self.puzzles == MASK).sum(1)


class _BadLine(Exception):
    """A problem with one line; turned into a UpoError (or a skip) by the caller."""


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


def _csv_columns(header: str) -> tuple[int, int, int]:
    """(puzzle column, solution column, number of columns) from a CSV header line."""
    cols = [c.strip().lower() for c in next(csv.reader([header]))]
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
    if fmt == "jsonl":
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise _BadLine(f"malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise _BadLine(f"expected a JSON object, got {type(obj).__name__}")
        for key in ("puzzle", "solution"):
            if key not in obj:
                raise _BadLine(f"missing key {key!r}")
            if not isinstance(obj[key], str):
                raise _BadLine(f"{key!r} must be a string, got {type(obj[key]).__name__}")
        return obj["puzzle"].strip(), obj["solution"].strip()
    if fmt == "csv":
        puzzle_col, solution_col, ncols = columns
        row = next(csv.reader([line]))
        if len(row) != ncols:
            raise _BadLine(f"expected {ncols} comma-separated fields, found {len(row)}")
        return row[puzzle_col].strip(), row[solution_col].strip()
    return line.strip(), None


def _check(
    puzzle_text: str, solution_text: str | None, spec: SudokuSpec, check_unique: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one record; returns (puzzle, solution) tokens or raises _BadLine with the reason."""
    try:
        puzzle = parse_chars(puzzle_text, spec, "puzzle", allow_blank=True)
    except ValueError as err:
        raise _BadLine(str(err)) from None
    found = _clashes(spec, puzzle)
    if found:
        raise _BadLine(f"puzzle's givens break the rules: {_conflict_text(found)}")
    solution = None
    if solution_text is not None:
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
    if solution is None or check_unique:
        found_solutions = solve(spec, puzzle, limit=2)
        if not found_solutions:
            raise _BadLine("puzzle has no solution")
        if len(found_solutions) > 1:
            raise _BadLine("puzzle has more than one solution")
        # A valid solution that keeps the givens of a unique puzzle is that puzzle's solution.
        solution = found_solutions[0] if solution is None else solution
    return puzzle, solution


def load_puzzles(
    path: str | Path,
    spec: SudokuSpec | None = None,
    skip_invalid: bool = False,
    check_unique: bool = False,
    progress: Callable[[int], object] | None = None,
) -> LoadResult:
    """Read and validate a puzzle file (see the module docstring for the formats).

    `spec` defaults to the size implied by the first puzzle's length. Plain-text puzzles are always
    solved, which proves them unique; other formats are proved unique only when `check_unique`.
    With `skip_invalid`, bad lines are counted in `skipped` (and described in `errors`) instead of
    raising. `progress(k)` is called after every k data lines, for progress bars on big files.
    """
    path = Path(path)
    lines = read_lines(path, "puzzles")
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
            puzzle, solution = _check(puzzle_text, solution_text, spec, check_unique)
        except _BadLine as err:
            message = f"{path}: line {no}: {err}"
            if not skip_invalid:
                raise UpoError(message) from None
            errors.append(message)
        else:
            puzzles.append(puzzle)
            solutions.append(solution)
        if progress is not None:
            progress(1)

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
