"""Reading a task's data file line by line with one error message per bad line.

Tasks whose items are JSON objects (addition, Zebra) share this: reading the file with clear
errors, splitting JSONL from plain text, and turning a problem with one line into a UpoError that
names the file, the line and the reason (or into a skip with `skip_invalid`). Line numbers count
from 1 and include blank lines, so they match what an editor shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import UpoError


class BadLine(Exception):
    """A problem with one line; turned into a UpoError (or a skip) by `parse_lines`."""


def read_lines(path: str | Path, what: str = "items") -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines; UpoError when the file cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from spreadsheet tools
    except FileNotFoundError:
        raise UpoError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UpoError(f"{path}: is a directory, expected a file of {what}") from None
    except UnicodeDecodeError as err:
        raise UpoError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise UpoError(f"{path}: cannot read ({err.strerror})") from None
    lines = [(no, line) for no, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise UpoError(f"{path}: empty file, no {what}")
    return lines


def json_object(line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise BadLine(f"malformed JSON ({err.msg} at column {err.colno})") from None
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
