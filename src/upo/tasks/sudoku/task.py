"""Sudoku as a task for the MDM: puzzle tokens in, full grid out, verifiable rewards."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..base import Batch
from .generate import GridStream
from .grid import MASK, SudokuSpec, cell_acc_batch, solved_batch


@dataclass
class SudokuTask:
    spec: SudokuSpec

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

    def cell_acc(self, batch: Batch, outputs: np.ndarray) -> np.ndarray:
        return cell_acc_batch(batch.tokens, outputs, batch.answers)

    def difficulty(self, batch: Batch) -> np.ndarray:
        """Number of blanks per item: what solve rate is plotted against."""
        return (batch.tokens == MASK).sum(1)

    difficulty_name = "blanks"

    def load(self, path, skip_invalid: bool = False) -> Batch:
        """A puzzle file in any format upo reads (see io.py) as a Batch; bad lines are a UpoError
        naming the line, or with `skip_invalid` are skipped and counted on stderr."""
        import sys

        from .io import load_puzzles

        data = load_puzzles(path, self.spec, skip_invalid=skip_invalid)
        if data.skipped:
            print(f"{path}: skipped {data.skipped} invalid lines", file=sys.stderr)
        return self.batch(data.puzzles, data.solutions)

    def generate(self, n: int, difficulty: tuple[int, int], seed: int) -> Batch:
        """n unique puzzles with blanks drawn from the inclusive range `difficulty`."""
        from .generate import generate_puzzles

        pairs = list(generate_puzzles(self.spec, n, difficulty, seed=seed))
        return self.batch(np.stack([p for p, _ in pairs]), np.stack([s for _, s in pairs]))
