"""Reading a task's data file line by line with one error message per bad line.

Tasks whose items are JSON objects (addition, Zebra) share this: reading the file with clear
errors, splitting JSONL from plain text, and turning a problem with one line into a UpoError that
names the file, the line and the reason (or into a skip with `skip_invalid`). Line numbers count
from 1 and include blank lines, so they match what an editor shows.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import UpoError

# Bounds on what is read, so that a wrong file (/dev/zero, a disk image, an endless pipe) ends in
# one error line instead of a hang or an exhausted memory. Each is far above any real data file:
# the largest public Sudoku set (9 million 9x9 puzzles) is about 1.5 GB and 9 million lines.
MAX_FILE_BYTES = 2 * 1024**3
MAX_LINE_CHARS = 1024**2
MAX_LINES = 20_000_000


class BadLine(Exception):
    """A problem with one line; turned into a UpoError (or a skip) by `parse_lines`."""


@dataclass(frozen=True)
class ReadFile:
    """A file's non-blank lines, read once, standing in for its path wherever one is read.

    `upo data check` guesses the task from the first line and then parses the file: a pipe
    (/dev/stdin) can be read only once, so both work from the same lines. `str()` is the path,
    which keeps the error messages unchanged.
    """

    name: str
    lines: list[tuple[int, str]]

    def __str__(self) -> str:
        return self.name


def read_once(path: str | Path, what: str = "items") -> ReadFile:
    return ReadFile(str(path), read_lines(path, what))


def refuse_huge(path: str | Path, f: IO) -> None:
    """UpoError for a regular file above MAX_FILE_BYTES, before any of it is read."""
    info = os.fstat(f.fileno())
    if stat.S_ISREG(info.st_mode) and info.st_size > MAX_FILE_BYTES:
        raise UpoError(
            f"{path}: file is {info.st_size / 1024**3:.1f} GB, upo reads files of at most "
            f"{MAX_FILE_BYTES // 1024**3} GB; split it"
        )


def bounded_lines(path: str | Path, f: IO) -> Iterator[str]:
    """The lines of the open text file `f` (line ends kept), with a UpoError naming the line
    for one longer than MAX_LINE_CHARS and for more than MAX_FILE_BYTES in all.

    Pipes and devices have no size to check up front, hence the count while reading; text
    characters are never more than bytes, so counting them errs on the generous side."""
    refuse_huge(path, f)
    total, no = 0, 0
    while line := f.readline(MAX_LINE_CHARS + 1):  # the +1 tells a full line from a cut one
        no += 1
        if len(line.rstrip("\r\n")) > MAX_LINE_CHARS:
            raise UpoError(
                f"{path}: line {no} is longer than {MAX_LINE_CHARS:,} characters; "
                "not a data file of one item per line"
            )
        total += len(line)
        if total > MAX_FILE_BYTES:
            raise UpoError(
                f"{path}: more than {MAX_FILE_BYTES // 1024**3} GB by line {no}, "
                "upo reads files of at most that size; split it"
            )
        yield line


def _non_blank(path: Path, f: IO) -> list[tuple[int, str]]:
    lines = []
    for no, line in enumerate(bounded_lines(path, f), 1):
        if not line.strip():
            continue
        if len(lines) == MAX_LINES:  # each kept line costs memory well beyond its text
            raise UpoError(f"{path}: more than {MAX_LINES:,} lines (line {no}); split it")
        lines.append((no, line.rstrip("\n")))
    return lines


def require_file(path) -> None:
    """A token task's data file is made by `upo data make`: when it is missing, say so. A pipe
    (/dev/fd/N) or a ReadFile passes, as any existing path does."""
    if isinstance(path, str | os.PathLike) and not os.path.exists(path):
        raise UpoError(f"{path}: no such file (make it with `upo data make`)")


def read_lines(path: str | Path | ReadFile, what: str = "items") -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines; UpoError when the file cannot be read.

    Lines end at LF, CR or CRLF, as in an editor. The file is read line by line within the
    bounds above, never whole."""
    if isinstance(path, ReadFile):
        return path.lines
    path = Path(path)
    try:
        # -sig: tolerate a BOM from spreadsheet tools
        with path.open(encoding="utf-8-sig") as f:
            lines = _non_blank(path, f)
    except FileNotFoundError:
        raise UpoError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UpoError(f"{path}: is a directory, expected a file of {what}") from None
    except UnicodeDecodeError as err:
        raise UpoError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise UpoError(f"{path}: cannot read ({err.strerror})") from None
    if not lines:
        raise UpoError(f"{path}: empty file, no {what}")
    return lines


def load_json(line: str):
    """json.loads, with every way it can fail on one line as a BadLine giving the reason."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise BadLine(f"malformed JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:  # the parser recurses per level: "[[[[...]]]]" runs out of stack
        raise BadLine("JSON nested too deeply") from None
    except ValueError:  # an integer beyond Python's 4300-digit conversion limit
        raise BadLine("JSON number with too many digits") from None


def json_object(line: str) -> dict:
    obj = load_json(line)
    if not isinstance(obj, dict):
        raise BadLine(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def string_field(obj: dict, key: str, required: bool = True) -> str | None:
    if key not in obj:
        if required:
            raise BadLine(f"missing key {key!r}")
        return None
    if not isinstance(obj[key], str):
        raise BadLine(f"{key!r} must be a string, got {type(obj[key]).__name__}")
    return obj[key].strip()


def parse_lines(
    path: str | Path,
    parse: Callable[[str], object],
    skip_invalid: bool = False,
    what: str = "items",
    progress: Callable[[int], object] | None = None,
) -> tuple[list, list[str]]:
    """(parsed items, messages of skipped lines): `parse(line)` per non-blank line, raising
    BadLine with the reason for a bad one."""
    items, errors = [], []
    for no, line in read_lines(path, what):
        try:
            items.append(parse(line))
        except BadLine as err:
            message = f"{path}: line {no}: {err}"
            if not skip_invalid:
                raise UpoError(message) from None
            errors.append(message)
        if progress is not None:
            progress(1)
    if not items:
        first = errors[0].removeprefix(f"{path}: ")
        raise UpoError(f"{path}: no valid {what} ({len(errors)} bad lines; first: {first})")
    return items, errors


def distinct(
    draw: Callable[[], tuple[str, object]],
    count: int,
    exclude: set[str],
    max_attempts: int,
    describe: str,
    progress=None,
) -> Iterator[object]:
    """Yield `count` items from `draw() -> (key, item)` with keys distinct and not in `exclude`;
    UpoError after `max_attempts` draws in a row without a new one (the space is exhausted)."""
    seen = set(exclude)
    made, misses = 0, 0
    while made < count:
        if misses >= max_attempts:
            raise UpoError(
                f"gave up after {misses} consecutive draws without a new item: found only {made} "
                f"distinct {describe}"
                + (f" not in the {len(exclude)} excluded ones" if exclude else "")
                + f", {count} were asked for"
            )
        key, item = draw()
        if key in seen:
            misses += 1
            continue
        seen.add(key)
        made, misses = made + 1, 0
        if progress is not None:
            progress(1)
        yield item
