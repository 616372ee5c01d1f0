"""Reading benchmark records from local files (JSONL, JSON, Parquet, CSV) or, when online, with
`datasets`. Offline and without a file, the error says what to download and where to put it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ...errors import UpoError

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
    if suffix == ".parquet":
        return _parquet(p)
    if suffix == ".csv":
        with p.open(newline="") as f:
            return list(csv.DictReader(f))
    raw = p.read_text()
    if suffix == ".json" and raw.lstrip().startswith("["):
        try:
            rows = json.loads(raw)
        except json.JSONDecodeError as err:
            raise UpoError(f"{p}: not valid JSON ({err.msg} at line {err.lineno})") from None
        return [_mapping(row, p, i + 1) for i, row in enumerate(rows)]
    rows = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(_mapping(json.loads(line), p, lineno))
        except json.JSONDecodeError as err:
            raise UpoError(f"{p}:{lineno}: not valid JSON ({err.msg})") from None
    return rows


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
