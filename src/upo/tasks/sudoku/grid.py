"""Sudoku geometry, token encoding, validity checks, rewards and rendering.

Tokens: a digit d in 1..n is token d; token 0 is the blank, which is also the MDM's mask token.
So a puzzle string with '0' for blanks encodes directly to the MDM's masked input.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

MASK = 0


@dataclass(frozen=True)
class SudokuSpec:
    """An n x n Sudoku with boxes of box_rows x box_cols cells (n = box_rows * box_cols)."""

    box_rows: int
    box_cols: int

    @property
    def n(self) -> int:
        return self.box_rows * self.box_cols

    @property
    def cells(self) -> int:
        return self.n * self.n

    @property
    def vocab_size(self) -> int:
        return self.n + 1  # digits 1..n plus the mask/blank token 0

    @property
    def name(self) -> str:
        return f"sudoku{self.n}"

    # The layout names every task spec shares (upo.tasks.base.SpecTask forwards them).
    @property
    def seq_len(self) -> int:
        return self.cells

    @property
    def mask(self) -> int:
        return MASK

    @property
    def answer_positions(self) -> np.ndarray:
        """Every cell: a puzzle's givens are wherever its generator left them."""
        return np.ones(self.cells, dtype=bool)

    @cached_property
    def row_of(self) -> np.ndarray:
        return np.repeat(np.arange(self.n), self.n)

    @cached_property
    def col_of(self) -> np.ndarray:
        return np.tile(np.arange(self.n), self.n)

    @cached_property
    def box_of(self) -> np.ndarray:
        return (self.row_of // self.box_rows) * self.box_rows + self.col_of // self.box_cols

    @cached_property
    def units(self) -> np.ndarray:
        """[3n, n] cell indices of every row, column and box."""
        idx = np.arange(self.cells)
        groups = [idx[self.row_of == u] for u in range(self.n)]
        groups += [idx[self.col_of == u] for u in range(self.n)]
        groups += [idx[self.box_of == u] for u in range(self.n)]
        return np.stack(groups)

    @cached_property
    def peers(self) -> list[tuple[int, ...]]:
        """For each cell, the other cells sharing its row, column or box."""
        out = []
        for i in range(self.cells):
            same = (
                (self.row_of == self.row_of[i])
                | (self.col_of == self.col_of[i])
                | (self.box_of == self.box_of[i])
            )
            same[i] = False
            out.append(tuple(np.flatnonzero(same).tolist()))
        return out


SPECS = {
    "sudoku4": SudokuSpec(2, 2),
    "sudoku6": SudokuSpec(2, 3),
    "sudoku9": SudokuSpec(3, 3),
}


def spec_for_length(length: int) -> SudokuSpec:
    for spec in SPECS.values():
        if spec.cells == length:
            return spec
    raise ValueError(f"no Sudoku has {length} cells (expected 16, 36 or 81)")


def encode(text: str) -> np.ndarray:
    """Puzzle or solution string ('0' or '.' for blank) -> int64 tokens (0 = blank)."""
    return np.array([0 if ch in "0." else int(ch) for ch in text], dtype=np.int64)


def decode(tokens) -> str:
    return "".join(str(int(t)) for t in np.asarray(tokens).reshape(-1))


def parse_chars(text: str, spec: SudokuSpec, what: str, allow_blank: bool) -> np.ndarray:
    """Validated encode: raises ValueError naming the length or the first illegal character."""
    if len(text) != spec.cells:
        raise ValueError(f"{what} has {len(text)} characters, expected {spec.cells}")
    legal = set(str(d) for d in range(1, spec.n + 1)) | (set("0.") if allow_blank else set())
    for pos, ch in enumerate(text):
        if ch not in legal:
            raise ValueError(f"{what} has illegal character {ch!r} at position {pos}")
    return encode(text)


def conflicts(spec: SudokuSpec, tokens: np.ndarray) -> list[tuple[str, int, int]]:
    """Rule violations among filled cells: (unit kind, unit index, repeated digit)."""
    tokens = np.asarray(tokens)
    found = []
    for u, unit in enumerate(spec.units):
        vals = tokens[unit]
        vals = vals[vals != MASK]
        counts = np.bincount(vals, minlength=spec.n + 1)
        for d in np.flatnonzero(counts > 1):
            kind = ("row", "column", "box")[u // spec.n]
            found.append((kind, u % spec.n, int(d)))
    return found


def is_valid_solution(spec: SudokuSpec, grid: np.ndarray) -> bool:
    """True when every row, column and box holds each digit exactly once."""
    grid = np.asarray(grid)
    if grid.shape[-1] != spec.cells or (grid == MASK).any():
        return False
    vals = grid[spec.units]  # [3n, n]
    return bool((np.sort(vals, axis=1) == np.arange(1, spec.n + 1)).all())


def solved_batch(spec: SudokuSpec, puzzles: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """Vectorised `solved` reward: grid valid, complete, and keeps every given. [B] float."""
    puzzles, grids = np.asarray(puzzles), np.asarray(grids)
    vals = grids[:, spec.units]  # [B, 3n, n]
    valid = (np.sort(vals, axis=2) == np.arange(1, spec.n + 1)).all(axis=(1, 2))
    keeps = ((puzzles == MASK) | (puzzles == grids)).all(axis=1)
    return (valid & keeps).astype(np.float64)


def cell_acc_batch(puzzles: np.ndarray, grids: np.ndarray, solutions: np.ndarray) -> np.ndarray:
    """Fraction of blanks equal to the reference solution (the paper's Sudoku metric). [B]."""
    puzzles, grids, solutions = map(np.asarray, (puzzles, grids, solutions))
    blank = puzzles == MASK
    right = (grids == solutions) & blank
    n_blank = blank.sum(1)
    # A puzzle with nothing to fill has nothing wrong: 1.0, not 0/0.
    return np.where(n_blank > 0, right.sum(1) / np.maximum(n_blank, 1), 1.0)


def render(spec: SudokuSpec, tokens, blank: str = ".") -> str:
    """A grid as text with box separators."""
    tokens = np.asarray(tokens).reshape(spec.n, spec.n)
    lines = []
    for r in range(spec.n):
        if r and r % spec.box_rows == 0:
            lines.append("+".join("-" * (2 * spec.box_cols + 1) for _ in range(spec.box_rows)))
        parts = []
        for b in range(spec.box_rows):
            cells = tokens[r, b * spec.box_cols : (b + 1) * spec.box_cols]
            parts.append(" " + " ".join(str(v) if v else blank for v in cells) + " ")
        lines.append("|".join(parts))
    return "\n".join(lines)
