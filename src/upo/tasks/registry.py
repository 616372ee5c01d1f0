"""Task names -> task objects."""

from __future__ import annotations

from ..errors import UpoError
from .sudoku.grid import SPECS
from .sudoku.task import SudokuTask

TASK_NAMES = sorted(SPECS)


def get_task(name: str):
    if name in SPECS:
        return SudokuTask(SPECS[name])
    raise UpoError(f"unknown task {name!r}; valid: {', '.join(TASK_NAMES)}")
