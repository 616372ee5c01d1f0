"""`upo data make` and `upo data check`: generate and validate puzzle files."""

from __future__ import annotations

import sys
import time

from ..errors import UpoError
from ..seeds import FULL_SEED_LIMIT, check_seed

# Consecutive draws without a new puzzle before `data make` gives up: far more than normal runs
# need (about 0.3% of 9x9 draws reach 60 blanks), yet it stops an impossible request.
MAX_ATTEMPTS = 5000


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


def difficulty_range(args, task) -> tuple[int, int]:
    """--blanks / --difficulty as an inclusive range, the task's default when not given."""
    lo, hi = task.default_difficulty
    text = args.blanks or f"{lo}-{hi}"
    if task.difficulty_name == "blanks":  # Sudoku's own wording: its users think in blanks
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
    exclude: set[str] = set()
    for path in args.exclude:
        exclude.update(task.keys(task.load(path, skip_invalid=task.exclude_skips_invalid)))
    noun = task.noun
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


def cmd_data_check(args) -> int:
    """Each task checks its own files (check_file); without --task the file's first line says
    which (upo.tasks.registry.check_file)."""
    from tqdm import tqdm

    from ..tasks.records import read_once
    from ..tasks.registry import check_file

    source = args.file
    if args.task is None:
        # Read once, then guess the task from the lines read: a pipe cannot be read twice.
        source = read_once(args.file, "puzzles")
    # Proving uniqueness is a solver call per line: show progress for big files on a terminal
    # (disable=None), but keep stderr to the one error line when it is captured.
    bar = tqdm(
        desc=f"data check {args.file}", unit="line", file=sys.stderr, leave=False, disable=None
    )
    with bar:
        checked = check_file(source, args.task, args.skip_invalid, bar.update)
    line = (
        f"{args.file}: {checked.count} valid {checked.noun}s ({checked.description}); "
        f"{checked.name}{checked.note}"
    )
    if args.skip_invalid:
        line += f"; {len(checked.errors)} invalid lines skipped"
        if checked.errors:
            line += f", first: {checked.errors[0].removeprefix(f'{args.file}: ')}"
    print(line)
    return 0


def register(sub) -> None:
    from ..tasks.registry import TASK_NAMES, TEXT_TASK_NAMES, get_task

    tasks = TASK_NAMES
    defaults = ", ".join(
        f"{t} {lo}-{hi}" for t in tasks for lo, hi in [get_task(t).default_difficulty]
    )
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
        help="blanks per puzzle (Sudoku), digits of the longer operand (addition) or clues "
        "(Zebra): a range A-B (drawn uniformly) or one number; default "
        + defaults
        + " (9x9 above 58 blanks is slow: few grids reach it)",
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
