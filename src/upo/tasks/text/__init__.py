"""Text benchmarks for large MDMs (GSM8K, MATH500, Sudoku-4x4 as free text and in the UPO
paper's fixed template, Countdown)."""

from .sudoku_paper import Sudoku4Paper
from .task import GSM8K, MATH500, TEXT_TASKS, Countdown, Sudoku4Text, TextTask, make_text_task

# The paper's protocol subclasses TextTask, so it joins the table here rather than in task.py.
TEXT_TASKS["sudoku4-paper"] = Sudoku4Paper

__all__ = [
    "GSM8K",
    "MATH500",
    "TEXT_TASKS",
    "Countdown",
    "Sudoku4Paper",
    "Sudoku4Text",
    "TextTask",
    "make_text_task",
]
