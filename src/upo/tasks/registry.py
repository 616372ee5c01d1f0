"""Task names -> task objects."""

from __future__ import annotations

from ..errors import UpoError
from .addition import AdditionSpec, AdditionTask
from .sudoku.grid import SPECS
from .sudoku.task import SudokuTask
from .zebra import ZebraSpec, ZebraTask

# Non-grid tasks by name. Addition: operands of up to 16 digits (a fixed 51-token layout).
# Zebra: houses x attributes with room for the most clues the generator's minimal sets need
# (4x4: at most 13 seen in 1000 draws; 5x5: at most 20).
OTHER_TASKS = {
    "addition": lambda: AdditionTask(AdditionSpec(16)),
    # The same layout (an addition MDM evaluates it) with half the columns passing a carry on.
    "addition-carry": lambda: AdditionTask(AdditionSpec(16, carry_rate=0.5)),
    "zebra4": lambda: ZebraTask(ZebraSpec(4, 4, 14)),
    "zebra5": lambda: ZebraTask(ZebraSpec(5, 5, 22)),
}
TASK_NAMES = sorted([*SPECS, *OTHER_TASKS])
# Text benchmarks for Hugging Face MDMs (no `upo data make`: their data is downloaded); bind
# them to an MDM (task.bind(mdm)) before use.
TEXT_TASK_NAMES = ["countdown", "gsm8k", "math500", "sudoku4-paper", "sudoku4-text"]


def get_task(name: str, options: dict | None = None):
    """The task called `name`; `options` are settings of text tasks (gen_length, block_length,
    chat, system)."""
    if name in TEXT_TASK_NAMES:
        from .text.task import make_text_task

        return make_text_task(name, options)
    if options:
        raise UpoError(f"task {name!r} takes no options (got {', '.join(sorted(options))})")
    if name in SPECS:
        return SudokuTask(SPECS[name])
    if name in OTHER_TASKS:
        return OTHER_TASKS[name]()
    raise UpoError(f"unknown task {name!r}; valid: {', '.join(TASK_NAMES + TEXT_TASK_NAMES)}")
