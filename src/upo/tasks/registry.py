"""Task names -> task objects: one entry per task, token and text tasks alike.

A new task is one package under upo/tasks/ and one line in TASKS."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UpoError
from .addition import AdditionSpec, AdditionTask
from .base import FileCheck
from .records import BadLine, json_object
from .sudoku.grid import SPECS
from .sudoku.task import SudokuTask, check_puzzle_file
from .sums import SumsSpec, SumsTask
from .text import GSM8K, MATH500, Countdown, Sudoku4Paper, Sudoku4PaperEval, Sudoku4Text
from .zebra import ZebraSpec, ZebraTask


@dataclass(frozen=True)
class TaskEntry:
    """How a registered task is made. `make(**options)` builds it; `text`: a text benchmark for
    Hugging Face MDMs, with settings (gen_length, block_length, chat, system, ...) as options,
    bound to an MDM (task.bind(mdm)) before use and with no `upo data make` (its data is
    downloaded). Token tasks take no options."""

    make: Callable[..., object]
    text: bool = False


def _token(make: Callable[[], object]) -> TaskEntry:
    return TaskEntry(make)


def _text(cls: type) -> TaskEntry:
    return TaskEntry(cls, text=True)


# Addition: operands of up to 16 digits (a fixed 51-token layout); addition-carry the same layout
# (an addition MDM evaluates it) with half the columns passing a carry on. Zebra: houses x
# attributes with room for the most clues the generator's minimal sets need (4x4: at most 13 seen
# in 1000 draws; 5x5: at most 20).
TASKS: dict[str, TaskEntry] = {
    "addition": _token(lambda: AdditionTask(AdditionSpec(16))),
    "addition-carry": _token(lambda: AdditionTask(AdditionSpec(16, carry_rate=0.5))),
    "sums": _token(lambda: SumsTask(SumsSpec(5, 2, short_rate=0.6))),
    "sudoku4": _token(lambda: SudokuTask(SPECS["sudoku4"])),
    "sudoku6": _token(lambda: SudokuTask(SPECS["sudoku6"])),
    "sudoku9": _token(lambda: SudokuTask(SPECS["sudoku9"])),
    "zebra4": _token(lambda: ZebraTask(ZebraSpec(4, 4, 14))),
    "zebra5": _token(lambda: ZebraTask(ZebraSpec(5, 5, 22))),
    "countdown": _text(Countdown),
    "gsm8k": _text(GSM8K),
    "math500": _text(MATH500),
    "sudoku4-paper": _text(Sudoku4Paper),
    "sudoku4-paper-eval": _text(Sudoku4PaperEval),
    "sudoku4-text": _text(Sudoku4Text),
}
# Views of TASKS, for choices and messages.
TASK_NAMES = sorted(name for name, entry in TASKS.items() if not entry.text)  # token tasks
TEXT_TASK_NAMES = sorted(name for name, entry in TASKS.items() if entry.text)


def get_task(name: str, options: dict | None = None):
    """The task called `name`; `options` are settings of text tasks (gen_length, block_length,
    chat, system)."""
    entry = TASKS.get(name)
    if entry is None:
        raise UpoError(f"unknown task {name!r}; valid: {', '.join(TASK_NAMES + TEXT_TASK_NAMES)}")
    if entry.text:
        return _text_task(name, entry.make, options)
    if options:
        raise UpoError(f"task {name!r} takes no options (got {', '.join(sorted(options))})")
    return entry.make()


def _text_task(name: str, cls: type, options: dict | None):
    """A text task with optional settings: the fields of its dataclass but those bind fills."""
    known = {f.name for f in dataclasses.fields(cls)} - {"name", "tokenizer", "mask_id", "eos_ids"}
    options = dict(options or {})
    unknown = sorted(set(options) - known)
    if unknown:
        raise UpoError(
            f"task {name}: unknown option {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    task = cls(**options)
    task.validate()
    return task


def checked_task_names() -> list[str]:
    """The tasks whose files `upo data check` validates: those with a `check_file`."""
    return [name for name in TASKS if hasattr(get_task(name), "check_file")]


def check_file(source, name: str | None, skip_invalid=False, progress=None) -> FileCheck:
    """`upo data check` of a file (a path or the lines read once from a pipe). `name` None: the
    task the first line's "task" key names, else Sudoku of the first puzzle's size (Sudoku files
    name no task)."""
    if name is None:
        name = _task_named_in(source)
        if name is None:
            return check_puzzle_file(source, None, skip_invalid, progress)
    task = get_task(name)
    if not hasattr(task, "check_file"):
        checked = ", ".join(checked_task_names())
        raise UpoError(f"data check does not validate {name} files; it checks {checked}")
    return task.check_file(source, skip_invalid=skip_invalid, progress=progress)


def _task_named_in(source) -> str | None:
    """The "task" key of a JSONL file's first line, when it names a token task."""
    try:
        name = json_object(source.lines[0][1]).get("task")
    except BadLine:
        return None  # the Sudoku loader reports the line with its own clear message
    return name if name in TASK_NAMES else None
