"""Text benchmarks for large MDMs (GSM8K, MATH500, Sudoku-4x4 as free text and in the UPO
paper's fixed template, Countdown); upo.tasks.registry names them."""

from .sudoku_paper import Sudoku4Paper, Sudoku4PaperEval
from .task import GSM8K, MATH500, Countdown, Sudoku4Text, TextTask

__all__ = [
    "GSM8K",
    "MATH500",
    "Countdown",
    "Sudoku4Paper",
    "Sudoku4PaperEval",
    "Sudoku4Text",
    "TextTask",
]
