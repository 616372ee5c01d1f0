"""Sudoku as a task for the MDM: puzzle tokens in, full grid out, verifiable rewards."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..base import Batch
from ..records import require_file
from .generate import GridStream
from .grid import MASK, SudokuSpec, cell_acc_batch, decode, solved_batch

# `upo data make`'s default blanks per size, and the most blanks a unique puzzle can have (the
# fewest clues known: 4, 8 and 17). Beyond the latter no puzzle exists, so a request for more is
# refused at once instead of searching until the attempt limit.
DEFAULT_BLANKS = {"sudoku4": (8, 11), "sudoku6": (18, 24), "sudoku9": (50, 58)}
MAX_BLANKS = {"sudoku4": 12, "sudoku6": 28, "sudoku9": 64}


@dataclass
class SudokuTask:
    spec: SudokuSpec
    difficulty_name: ClassVar[str] = "blanks"
    block_length: ClassVar[int | None] = None  # any blank may be revealed at any step

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def seq_len(self) -> int:
        return self.spec.cells

    @property
    def vocab_size(self) -> int:
        return self.spec.vocab_size

    @property
    def mask_id(self) -> int:
        return MASK

    @property
    def answer_positions(self) -> np.ndarray:
        """Every cell: a puzzle's givens are wherever its generator left them."""
        return np.ones(self.seq_len, dtype=bool)

    @property
    def grid_side(self) -> int:
        return self.spec.n

    @property
    def default_difficulty(self) -> tuple[int, int]:
        return DEFAULT_BLANKS[self.name]

    @property
    def max_difficulty(self) -> int:
        return MAX_BLANKS[self.name]

    def bind(self, denoiser) -> SudokuTask:
        return self  # the same tokens for every MDM of this layout

    def model_defaults(self) -> dict:
        return {
            "vocab_size": self.vocab_size,
            "mask_id": self.mask_id,
            "seq_len": self.seq_len,
            "grid_box": [self.spec.box_rows, self.spec.box_cols],
        }

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
        from .io import load_puzzles

        require_file(path)
        data = load_puzzles(path, self.spec, skip_invalid=skip_invalid)
        if data.skipped:
            print(f"{path}: skipped {data.skipped} invalid lines", file=sys.stderr)
        return self.batch(data.puzzles, data.solutions)

    def check(self, path, skip_invalid: bool = False, progress=None) -> tuple[Batch, list[str]]:
        """(valid puzzles, messages of the skipped lines); every puzzle is proved unique."""
        from .io import load_puzzles

        data = load_puzzles(
            path, self.spec, skip_invalid=skip_invalid, check_unique=True, progress=progress
        )
        return self.batch(data.puzzles, data.solutions), data.errors

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
        from .generate import generate_puzzles

        made = generate_puzzles(
            self.spec, n, difficulty, seed, exclude, progress=progress, max_attempts=max_attempts
        )
        pairs = list(made)
        return self.batch(np.stack([p for p, _ in pairs]), np.stack([s for _, s in pairs]))

    def write(self, path, batch: Batch) -> None:
        from .io import write_jsonl

        write_jsonl(path, batch.tokens, batch.answers)

    def describe(self, batch: Batch) -> str:
        blanks = self.difficulty(batch)
        return f"blanks {blanks.min()}-{blanks.max()}, mean {blanks.mean():.1f}"
