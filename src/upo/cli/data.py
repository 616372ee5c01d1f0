"""`upo data make` and `upo data check`: generate and validate puzzle files."""

from __future__ import annotations

import sys
import time

import numpy as np

from ..errors import UpoError
from ..seeds import FULL_SEED_LIMIT, check_seed
from ..tasks.sudoku.grid import SPECS
from ..tasks.sudoku.task import DEFAULT_BLANKS

# Consecutive draws without a new puzzle before `data make` gives up: far more than normal runs
# need (about 0.3% of 9x9 draws reach 60 blanks), yet it stops an impossible request.
MAX_ATTEMPTS = 5000
# Text tasks whose data are 4x4 puzzle files, by the grid they hold. Both score a completion
# against the file's Solution, so unlike the grid tasks they accept puzzles with several solutions.
TEXT_PUZZLE_TASKS = {"sudoku4-paper": "sudoku4", "sudoku4-text": "sudoku4"}


def parse_blanks(text: str, task: str, top: int) -> tuple[int, int]:
    """'50-58' or '55' -> inclusive (lo, hi) for a Sudoku of at most `top` blanks."""
    parts = text.strip().split("-")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        lo, hi = int(parts[0]), int(parts[-1])
    except ValueError:
        raise UpoError(f"--blanks {text!r}: expected a number or a range like 50-58") from None
    if lo > hi:
        raise UpoError(f"--blanks {text!r}: the range is empty ({lo} > {hi})")
    if lo < 1 or hi > top:
        raise UpoError(f"--blanks {text!r}: {task} puzzles can have 1 to {top} blanks")
    return lo, hi


def parse_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise UpoError(f"--n {text!r}: expected a whole number of puzzles") from None
    if n < 1:
        raise UpoError(f"--n {text!r}: must be at least 1")
    return n


def _blank_stats(blanks: np.ndarray) -> str:
    return f"blanks {blanks.min()}-{blanks.max()}, mean {blanks.mean():.1f}"


def parse_levels(text: str, top: int, what: str) -> tuple[int, int]:
    """'5-16' or '8' -> inclusive (lo, hi) within 1..top, for tasks other than Sudoku."""
    parts = text.strip().split("-")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        lo, hi = int(parts[0]), int(parts[-1])
    except ValueError:
        raise UpoError(f"--difficulty {text!r}: expected a number or a range like 5-16") from None
    if lo > hi or lo < 1 or hi > top:
        raise UpoError(f"--difficulty {text!r}: {what} must be a range within 1-{top}")
    return lo, hi


def _check_other(args, task, source) -> int:
    from tqdm import tqdm

    bar = tqdm(
        desc=f"data check {args.file}", unit="line", file=sys.stderr, leave=False, disable=None
    )
    with bar:
        batch, errors = task.check(source, skip_invalid=args.skip_invalid, progress=bar.update)
    line = f"{args.file}: {len(batch)} valid items ({task.describe(batch)}); {task.name}"
    if args.skip_invalid:
        line += f"; {len(errors)} invalid lines skipped"
        if errors:
            line += f", first: {errors[0].removeprefix(f'{args.file}: ')}"
    print(line)
    return 0


def _task_named_in(source) -> str | None:
    """The "task" key of a JSONL file's first line, when it names a non-Sudoku task."""
    from ..tasks.records import BadLine, json_object
    from ..tasks.registry import OTHER_TASKS

    try:
        name = json_object(source.lines[0][1]).get("task")
    except BadLine:
        return None  # the Sudoku loader reports the line with its own clear message
    return name if name in OTHER_TASKS else None


def difficulty_range(args, task) -> tuple[int, int]:
    """--blanks / --difficulty as an inclusive range, the task's default when not given."""
    lo, hi = task.default_difficulty
    text = args.blanks or f"{lo}-{hi}"
    if args.task in SPECS:  # Sudoku's own wording: its users think in blanks
        return parse_blanks(text, args.task, task.max_difficulty)
    return parse_levels(text, task.max_difficulty, task.difficulty_name)


def cmd_data_make(args) -> int:
    """Every token task generates, keys and writes its own items (upo.tasks.base.TokenTask)."""
    from tqdm import tqdm

    from ..io_utils import check_file_target
    from ..tasks.registry import get_task

    check_seed(args.seed, "--seed", FULL_SEED_LIMIT)
    check_file_target(args.out)  # a directory, FIFO or device is refused before any work
    task = get_task(args.task)
    n = parse_count(args.n)
    levels = difficulty_range(args, task)
    if args.max_attempts < 1:
        raise UpoError(f"--max-attempts must be at least 1, got {args.max_attempts}")
    sudoku = args.task in SPECS
    exclude: set[str] = set()
    for path in args.exclude:
        # A bad line in a Sudoku file to exclude is an error; the other tasks skip it.
        exclude.update(task.keys(task.load(path, skip_invalid=not sudoku)))
    noun = "puzzle" if sudoku else "item"
    start = time.perf_counter()
    with tqdm(total=n, desc=f"data make {args.task}", unit=noun, file=sys.stderr) as bar:
        batch = task.generate(n, levels, args.seed, exclude, bar.update, args.max_attempts)
    try:
        task.write(args.out, batch)
    except OSError as err:
        raise UpoError(f"{args.out}: cannot write ({err.strerror or err})") from None
    seconds = time.perf_counter() - start
    print(
        f"wrote {args.out}: {n} {args.task} {noun}s, {task.describe(batch)}, {seconds:.1f}s",
        file=sys.stderr,
    )
    return 0


def _several_solutions_note(data) -> str:
    """What a text task's check says about puzzles with more than one solution."""
    if not data.multiple:
        return "; none has more than one solution"
    verb = "has" if data.multiple == 1 else "have"
    return (
        f"; {data.multiple} {verb} more than one solution (first: line {data.first_multiple}): "
        "cell accuracy against the given Solution undercounts them, solve_rate counts any valid "
        "completion"
    )


def cmd_data_check(args) -> int:
    from tqdm import tqdm

    from ..tasks.registry import OTHER_TASKS, TASK_NAMES, TEXT_TASK_NAMES, get_task

    if args.task in TEXT_TASK_NAMES and args.task not in TEXT_PUZZLE_TASKS:
        checked = ", ".join([*TASK_NAMES, *TEXT_PUZZLE_TASKS])
        raise UpoError(f"data check does not validate {args.task} files; it checks {checked}")
    from ..tasks.records import read_once

    other = args.task if args.task in OTHER_TASKS else None
    source = args.file
    if args.task is None:
        # Read once, then guess the task from the lines read: a pipe cannot be read twice.
        source = read_once(args.file, "puzzles")
        other = _task_named_in(source)
    if other is not None:
        return _check_other(args, get_task(other), source)

    from ..tasks.sudoku.io import load_puzzles

    # Sudoku files are checked by the loader itself: without --task it finds the grid size from
    # the first puzzle, and for the 4x4 text tasks it accepts puzzles with several solutions.
    text_task = args.task in TEXT_PUZZLE_TASKS
    grid = TEXT_PUZZLE_TASKS.get(args.task, args.task)
    spec = SPECS[grid] if grid else None
    # Proving uniqueness is a solver call per line: show progress for big files on a terminal
    # (disable=None), but keep stderr to the one error line when it is captured.
    bar = tqdm(
        desc=f"data check {args.file}", unit="line", file=sys.stderr, leave=False, disable=None
    )
    with bar:
        data = load_puzzles(
            source,
            spec,
            skip_invalid=args.skip_invalid,
            check_unique=True,
            progress=bar.update,
            allow_multiple=text_task,
        )
    name = args.task if text_task else data.spec.name
    line = f"{args.file}: {len(data)} valid puzzles ({_blank_stats(data.blanks)}); {name}"
    if text_task:
        line += _several_solutions_note(data)
    if args.skip_invalid:
        line += f"; {data.skipped} invalid lines skipped"
        if data.errors:
            line += f", first: {data.errors[0].removeprefix(f'{args.file}: ')}"
    print(line)
    return 0


def register(sub) -> None:
    from ..tasks.registry import TASK_NAMES, TEXT_TASK_NAMES

    tasks = TASK_NAMES
    data = sub.add_parser("data", help="generate and check puzzle files")
    data_sub = data.add_subparsers(dest="action", required=True)

    p = data_sub.add_parser(
        "make",
        help="generate distinct puzzles with unique solutions as JSONL",
        description="Generate distinct puzzles with unique solutions, deterministic for a seed. "
        "Puzzles in --exclude files are never emitted: make the test set first and pass it as "
        "--exclude when making the training set.",
    )
    p.add_argument("task", choices=tasks)
    p.add_argument("--n", required=True, help="number of puzzles")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--blanks",
        "--difficulty",
        dest="blanks",
        help="blanks per puzzle, a range A-B (drawn uniformly) or one number; default "
        + ", ".join(f"{t} {lo}-{hi}" for t, (lo, hi) in DEFAULT_BLANKS.items())
        + " (9x9 above 58 blanks is slow: few grids reach it); for addition the digits of the "
        "longer operand (default 1-16)",
    )
    p.add_argument("--out", required=True, help="output JSONL file (replaced atomically)")
    p.add_argument(
        "--exclude",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help="puzzle files whose puzzles must not be emitted (any format upo reads)",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=MAX_ATTEMPTS,
        help="give up after this many draws in a row without a new puzzle (default %(default)s)",
    )
    p.set_defaults(func=cmd_data_make)

    p = data_sub.add_parser(
        "check",
        help="validate a puzzle file; names the first bad line and why",
        description="Validate a puzzle file (JSONL, CSV or plain text), proving every puzzle has "
        "exactly one solution. Exit 0 when valid, else one error line and exit 2. With --task "
        "sudoku4-paper or sudoku4-text, puzzles with several solutions are accepted and counted, "
        "since those tasks score against the file's Solution.",
    )
    p.add_argument("file")
    # Text tasks are choices too, so that the ones data check cannot validate get a clear error.
    p.add_argument(
        "--task",
        choices=tasks + TEXT_TASK_NAMES,
        help="expected task (default: from the first line)",
    )
    p.add_argument(
        "--skip-invalid", action="store_true", help="count bad lines instead of failing on them"
    )
    p.set_defaults(func=cmd_data_check)
