"""Task names -> task objects."""

from __future__ import annotations

from ..errors import UpoError
from .addition import AdditionSpec, AdditionTask
from .sudoku.grid import SPECS
from .sudoku.task import SudokuTask

# Non-grid tasks by name. Addition: operands of up to 16 digits (a fixed 51-token layout).
OTHER_TASKS = {"addition": lambda: AdditionTask(AdditionSpec(16))}
TASK_NAMES = sorted([*SPECS, *OTHER_TASKS])


def get_task(name: str):
    if name in SPECS:
        return SudokuTask(SPECS[name])
    if name in OTHER_TASKS:
        return OTHER_TASKS[name]()
    raise UpoError(f"unknown task {name!r}; valid: {', '.join(TASK_NAMES)}")
