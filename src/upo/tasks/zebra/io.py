"""Zebra files: one JSON object per line, with one clear error per bad line.

  {"task": "zebra4", "clues": [["same", 0, 1, 2, 3], ["at", 1, 0, 2], ...],
   "solution": [[v, ...], ...]}

A relation clue is [kind, attribute, value, attribute, value]; `at` / `not_at` are
[kind, attribute, value, house]; everything counts from 0 (spec.py says what each kind means).
"solution" (N rows of M values, house by house) is optional: without it the solver supplies it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...io_utils import atomic_write_text
from ..records import BadLine, json_object
from .solver import solve
from .spec import KINDS, NEXT, ZebraSpec, clue_holds, house_of, valid_grids


def _index(value, top: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadLine(f"{what} must be a whole number, got {value!r}")
    if not 0 <= value < top:
        raise BadLine(f"{what} {value} is out of range 0-{top - 1}")
    return value


def parse_clue(raw, spec: ZebraSpec, k: int) -> tuple:
    where = f"clue {k + 1}"
    if not isinstance(raw, list) or not raw or raw[0] not in KINDS:
        kinds = ", ".join(KINDS)
        raise BadLine(f"{where} must be a list starting with one of {kinds}, got {raw!r}")
    kind = KINDS.index(raw[0])
    size = 5 if kind <= NEXT else 4
    if len(raw) != size:
        raise BadLine(f"{where} ({raw[0]}) needs {size} entries, got {len(raw)}")
    a1 = _index(raw[1], spec.attributes, f"{where}: attribute")
    v1 = _index(raw[2], spec.houses, f"{where}: value")
    if kind <= NEXT:
        a2 = _index(raw[3], spec.attributes, f"{where}: attribute")
        v2 = _index(raw[4], spec.houses, f"{where}: value")
        if (a1, v1) == (a2, v2):
            raise BadLine(f"{where} relates {raw[1]}:{raw[2]} to itself")
        return (kind, a1, v1, a2, v2)
    return (kind, a1, v1, _index(raw[3], spec.houses, f"{where}: house"), -1)


def parse_solution(raw, spec: ZebraSpec) -> np.ndarray:
    n, m = spec.houses, spec.attributes
    if (
        not isinstance(raw, list)
        or len(raw) != n
        or any(not isinstance(r, list) or len(r) != m for r in raw)
    ):
        raise BadLine(f"solution must be {n} rows of {m} values")
    grid = np.array([[_index(v, n, "solution value") for v in row] for row in raw])
    if not valid_grids(spec, grid[None])[0]:
        col = next(a for a in range(m) if sorted(grid[:, a]) != list(range(n)))
        raise BadLine(f"solution repeats a value of attribute {col}")
    return grid


def parse_line(line: str, spec: ZebraSpec, prove_unique: bool) -> tuple[np.ndarray, np.ndarray]:
    """(clues [C, 5], solution [N, M]) of one line; BadLine with the reason otherwise."""
    obj = json_object(line)
    if "clues" not in obj:
        raise BadLine("missing key 'clues'")
    raw = obj["clues"]
    if not isinstance(raw, list) or not raw:
        raise BadLine("'clues' must be a non-empty list")
    if len(raw) > spec.max_clues:
        raise BadLine(f"{len(raw)} clues, {spec.name} fits at most {spec.max_clues}")
    clues = np.array([parse_clue(c, spec, k) for k, c in enumerate(raw)], dtype=np.int64)
    grid = parse_solution(obj["solution"], spec) if "solution" in obj else None
    if grid is not None:
        holds = clue_holds(clues, house_of(grid[None]))[0]
        if not holds.all():
            raise BadLine(f"solution breaks clue {int(np.argmin(holds)) + 1}")
    if grid is None or prove_unique:
        found = solve(spec, clues, limit=2)
        if not found:
            raise BadLine("clues have no solution")
        if len(found) > 1:
            raise BadLine("clues have more than one solution")
        grid = found[0] if grid is None else grid
    return clues, grid


def clue_json(clue) -> list:
    kind, a1, v1, x, y = (int(t) for t in clue)
    head = [KINDS[kind], a1, v1, x]
    return head + [y] if kind <= NEXT else head


def write_jsonl(path: str | Path, spec: ZebraSpec, items) -> None:
    """Rows of (clues, grid) pairs, written atomically."""
    rows = [
        json.dumps(
            {
                "task": spec.name,
                "clues": [clue_json(c) for c in clues],
                "solution": np.asarray(grid).tolist(),
            }
        )
        for clues, grid in items
    ]
    atomic_write_text(path, "".join(r + "\n" for r in rows))
