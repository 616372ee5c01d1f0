"""Sudoku as a task for the MDM: puzzle tokens in, full grid out, verifiable rewards."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..base import Batch, FileCheck, SpecTask
from ..records import require_file
from .generate import GridStream, generate_puzzles
from .grid import MASK, SudokuSpec, cell_acc_batch, decode, solved_batch
from .io import load_puzzles, write_jsonl

# `upo data make`'s default blanks per size, and the most blanks a unique puzzle can have (the
# fewest clues known: 4, 8 and 17). Beyond the latter no puzzle exists, so a request for more is
# refused at once instead of searching until the attempt limit.
DEFAULT_BLANKS = {"sudoku4": (8, 11), "sudoku6": (18, 24), "sudoku9": (50, 58)}
MAX_BLANKS = {"sudoku4": 12, "sudoku6": 28, "sudoku9": 64}


@dataclass
class SudokuTask(SpecTask):
    spec: SudokuSpec
    difficulty_name: ClassVar[str] = "blanks"
    noun: ClassVar[str] = "puzzle"
    exclude_skips_invalid: ClassVar[bool] = False  # a bad line in an --exclude file is an error

    @property
    def grid_side(self) -> int:
        return self.spec.n

    @property
    def default_difficulty(self) -> tuple[int, int]:
        return DEFAULT_BLANKS[self.name]

    @property
    def max_difficulty(self) -> int:
        return MAX_BLANKS[self.name]

    def structure_defaults(self) -> dict:
        return {"grid_box": [self.spec.box_rows, self.spec.box_cols]}

    def stream(self, seed: int) -> GridStream:
        return GridStream(self.spec, seed)

    def batch(self, puzzles: np.ndarray, solutions: np.ndarray) -> Batch:
        puzzles = np.asarray(puzzles, dtype=np.int64)
        blanks = (puzzles == MASK).sum(1)
        return Batch(
            puzzles,
            np.asarray(solutions, dtype=np.int64),
            np.ones_like(puzzles, dtype=bool),
            [{"blanks": int(b)} for b in blanks],
        )

    def solved(self, batch: Batch, outputs: np.ndarray) -> np.ndarray:
        return solved_batch(self.spec, batch.tokens, outputs)

    def partial_credit(self, batch: Batch, outputs: np.ndarray) -> np.ndarray:
        """Fraction of the blanks equal to the solution (1 for a puzzle without blanks)."""
        return cell_acc_batch(batch.tokens, outputs, batch.answers)

    def difficulty(self, batch: Batch) -> np.ndarray:
        """Number of blanks per item: what solve rate is plotted against."""
        return (batch.tokens == MASK).sum(1)

    def keys(self, batch: Batch) -> list[str]:
        """The puzzle string: a puzzle is the same puzzle whatever solution a file gives it."""
        return [decode(p) for p in batch.tokens]

    def load(self, path, skip_invalid: bool = False) -> Batch:
        """A puzzle file in any format upo reads (see io.py) as a Batch; bad lines are a UpoError
        naming the line, or with `skip_invalid` are skipped and counted on stderr."""
        require_file(path)
        data = load_puzzles(path, self.spec, skip_invalid=skip_invalid)
        if data.skipped:
            print(f"{path}: skipped {data.skipped} invalid lines", file=sys.stderr)
        return self.batch(data.puzzles, data.solutions)

    def check(self, path, skip_invalid: bool = False, progress=None) -> tuple[Batch, list[str]]:
        """(valid puzzles, messages of the skipped lines); every puzzle is proved unique."""
        data = load_puzzles(
            path, self.spec, skip_invalid=skip_invalid, check_unique=True, progress=progress
        )
        return self.batch(data.puzzles, data.solutions), data.errors

    def check_file(self, source, skip_invalid: bool = False, progress=None) -> FileCheck:
        return check_puzzle_file(source, self.spec, skip_invalid, progress)

    def generate(
        self,
        n: int,
        difficulty: tuple[int, int],
        seed: int,
        exclude: set[str] = frozenset(),
        progress=None,
        max_attempts: int | None = None,
    ) -> Batch:
        """n distinct puzzles with unique solutions and blanks drawn from the inclusive range
        `difficulty`, none of them in `exclude` (puzzle strings, see `keys`); `max_attempts`: see
        generate_puzzles (None: no bound)."""
        made = generate_puzzles(
            self.spec, n, difficulty, seed, exclude, progress=progress, max_attempts=max_attempts
        )
        pairs = list(made)
        return self.batch(np.stack([p for p, _ in pairs]), np.stack([s for _, s in pairs]))

    def write(self, path, batch: Batch) -> None:
        write_jsonl(path, batch.tokens, batch.answers)


def check_puzzle_file(
    source, spec: SudokuSpec | None, skip_invalid=False, progress=None, name=None
) -> FileCheck:
    """`upo data check` of a Sudoku file, every puzzle proved unique. `spec` None: the size of
    the first puzzle. `name`: a text task reading 4x4 files (sudoku4-paper, sudoku4-text), which
    scores against the file's Solution and so accepts puzzles with several solutions."""
    data = load_puzzles(
        source,
        spec,
        skip_invalid=skip_invalid,
        check_unique=True,
        progress=progress,
        allow_multiple=name is not None,
    )
    blanks = data.blanks
    described = f"blanks {blanks.min()}-{blanks.max()}, mean {blanks.mean():.1f}"
    check = FileCheck(name or data.spec.name, "puzzle", len(data), described, data.errors)
    if name is not None:
        check.note = _several_solutions_note(data)
    return check


def _several_solutions_note(data) -> str:
    """What a text task's check says about puzzles with more than one solution."""
    if not data.multiple:
        return "; none has more than one solution"
    verb = "has" if data.multiple == 1 else "have"
    return (
        f"; {data.multiple} {verb} more than one solution (first: line {data.first_multiple}): "
        "cell accuracy against the given Solution undercounts them, solve_rate counts any valid "
        "completion"
    )
