"""Text benchmarks for large MDMs (GSM8K, MATH500, Sudoku-4x4 text, Countdown)."""

from .task import GSM8K, MATH500, TEXT_TASKS, Countdown, Sudoku4Text, TextTask, make_text_task

__all__ = [
    "GSM8K",
    "MATH500",
    "TEXT_TASKS",
    "Countdown",
    "Sudoku4Text",
    "TextTask",
    "make_text_task",
]
