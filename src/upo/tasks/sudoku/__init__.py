"""The Sudoku task: n x n grids (4x4, 6x6, 9x9)."""

from .grid import MASK, SPECS, SudokuSpec, cell_acc_batch, decode, encode, render, solved_batch

__all__ = [
    "MASK",
    "SPECS",
    "SudokuSpec",
    "cell_acc_batch",
    "decode",
    "encode",
    "render",
    "solved_batch",
]
