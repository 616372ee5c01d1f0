"""Reading benchmark records from local files (JSONL, JSON, Parquet, CSV) or, when online, with
`datasets`. Offline and without a file, the error says what to download and where to put it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ...errors import UpoError
from ..records import MAX_LINE_CHARS, bounded_lines, read_lines, refuse_huge

# Where each benchmark comes from, and the command that writes it where upo looks by default.
SOURCES = {
    "gsm8k": ("openai/gsm8k", "main", "test"),
    "math500": ("HuggingFaceH4/MATH-500", None, "test"),
    "countdown": ("Jiayi-Pan/Countdown-Tasks-3to4", None, "train"),
}


def download_hint(task: str, path: str) -> str:
    if task not in SOURCES:
        return (
            f"make it with `upo data make sudoku4 --out {path}` (for training puzzles add "
            "`--exclude` with the test file: 4x4 puzzles repeat) or use the public 4x4 CSV"
        )
    name, config, split = SOURCES[task]
    args = f"'{name}'" + (f", '{config}'" if config else "")
    return (
        f"download the {split} split of {name} on a machine with network, e.g. "
        f"`python -c \"import datasets; datasets.load_dataset({args}, split='{split}')"
        f".to_json('{path}')\"`, and copy it to {path}"
    )


def read_records(path: str | Path, task: str) -> list[dict]:
    """Records from a local file, or from `datasets` for a `hf:NAME[:CONFIG]:SPLIT` path."""
    text = str(path)
    if text.startswith("hf:"):
        return _from_datasets(text[3:], task)
    p = Path(path)
    if not p.is_file():
        raise UpoError(f"{p}: {task} data not found; {download_hint(task, str(p))}")
    suffix = p.suffix.lower()
    try:
        with p.open("rb") as f:
            refuse_huge(p, f)  # every format below holds the whole file in memory
        if suffix == ".parquet":
            return _parquet(p)
        if suffix == ".csv":
            return _csv(p)
        if suffix == ".json" and _json_array(p):
            return _json_file(p)
    except UnicodeDecodeError as err:
        raise UpoError(f"{p}: not a text file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise UpoError(f"{p}: cannot read ({err.strerror})") from None
    # JSONL: read line by line, with each line's length bounded.
    return [_mapping(_loads(line, f"{p}:{no}"), p, no) for no, line in read_lines(p, "records")]


def _csv(path: Path) -> list[dict]:
    # Bounded lines, as csv joins the lines of a quoted field itself; its own limit
    # (131,072 characters a field) is a csv.Error, named with the line it stopped at.
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(bounded_lines(path, f))
        try:
            return list(reader)
        except csv.Error as err:
            # DictReader's own line_num lags a failed row; its inner reader's counts it
            raise UpoError(f"{path}:{reader.reader.line_num}: unreadable CSV ({err})") from None


def _json_array(path: Path) -> bool:
    """Whether a .json file holds one JSON array rather than one record per line."""
    with path.open(encoding="utf-8-sig") as f:
        return f.read(MAX_LINE_CHARS).lstrip().startswith("[")


def _json_file(path: Path) -> list[dict]:
    rows = _loads(path.read_text(encoding="utf-8-sig"), str(path), whole_file=True)
    return [_mapping(row, path, i + 1) for i, row in enumerate(rows)]


def _loads(text: str, where: str, whole_file: bool = False):
    """json.loads, with each way it can fail as one UpoError naming `where`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        at = f" at line {err.lineno}" if whole_file else ""
        raise UpoError(f"{where}: not valid JSON ({err.msg}{at})") from None
    except RecursionError:  # the parser recurses per level: "[[[[...]]]]" runs out of stack
        raise UpoError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError:  # an integer beyond Python's 4300-digit conversion limit
        raise UpoError(f"{where}: not valid JSON (a number with too many digits)") from None


def _mapping(row, path: Path, lineno: int) -> dict:
    if not isinstance(row, dict):
        raise UpoError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
    return row


def _parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except ImportError:
        pass
    try:
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    except ImportError:
        raise UpoError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None


def _from_datasets(spec: str, task: str) -> list[dict]:
    parts = spec.split(":")
    name, config, split = parts[0], None, "test"
    if len(parts) == 2:
        split = parts[1]
    elif len(parts) >= 3:
        config, split = parts[1], parts[2]
    try:
        import datasets
    except ImportError:
        raise UpoError(
            f"hf:{spec}: the datasets package is not installed; {download_hint(task, f'data/{task}.jsonl')}"
        ) from None
    try:
        return list(datasets.load_dataset(name, config, split=split))
    except Exception as err:  # offline, unknown name, ...: one line, with the way out
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UpoError(
            f"hf:{spec}: could not load ({first}); {download_hint(task, f'data/{task}.jsonl')}"
        ) from None


def field(row: dict, names: tuple[str, ...], path, index: int):
    """The first of `names` present in the record; an UpoError naming the record otherwise."""
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    raise UpoError(f"{path}: record {index + 1} has none of the fields {', '.join(names)}")
