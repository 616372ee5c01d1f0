"""Addition files: our JSONL and plain `a+b` / `a+b=c` lines, with one clear error per bad line.

JSONL rows: `{"task": "addition", "a": "123", "b": "4567", "answer": "4690", "digits": 4}`;
"answer" is optional (it is recomputed and, when present, must be right), other keys are ignored.
Plain text: one `a+b` or `a+b=c` per line, spaces allowed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...io_utils import atomic_write_text
from ..records import BadLine, json_object, string_field
from .generate import digit_string
from .layout import AdditionSpec


def parse_number(text: str, spec: AdditionSpec, what: str, limit: int) -> int:
    if not text:
        raise BadLine(f"{what} is empty")
    if not text.isascii() or not text.isdigit():
        bad = next(ch for ch in text if not ("0" <= ch <= "9"))
        raise BadLine(f"{what} {text!r} has a non-digit character {bad!r}")
    # Count the digits on the text: int() of a huge operand is slow and, past 4300 digits,
    # refused by Python itself.
    digits = len(text.lstrip("0") or "0")
    if digits > limit:
        raise BadLine(f"{what} has {digits} digits, this task allows at most {limit}")
    return int(text)


def parse_line(line: str, spec: AdditionSpec) -> tuple[int, int]:
    """(a, b) from one line; BadLine naming the problem otherwise."""
    line = line.strip()
    if line[:1] in "{[":  # JSON, or a JSON mistake worth naming as such
        obj = json_object(line)
        a_text, b_text = string_field(obj, "a"), string_field(obj, "b")
        c_text = string_field(obj, "answer", required=False)
    else:
        left, eq, c_text = line.replace(" ", "").partition("=")
        a_text, plus, b_text = left.partition("+")
        if not plus:
            raise BadLine(f"expected 'a+b' or 'a+b=c', got {line[:40]!r}")
        c_text = c_text if eq else None
    a = parse_number(a_text, spec, "a", spec.digits)
    b = parse_number(b_text, spec, "b", spec.digits)
    if c_text is not None:
        c = parse_number(c_text, spec, "answer", spec.digits + 1)
        if c != a + b:
            raise BadLine(f"answer {c} is wrong: {a}+{b} = {a + b}")
    return a, b


def write_jsonl(path: str | Path, spec: AdditionSpec, a: np.ndarray, b: np.ndarray) -> None:
    """Rows of digit arrays a, b [N, D] as JSONL, written atomically."""
    rows = []
    for x, y in zip(a, b):
        xs, ys = digit_string(x), digit_string(y)
        row = {
            "task": spec.name,
            "a": xs,
            "b": ys,
            "answer": str(int(xs) + int(ys)),
            "digits": max(len(xs), len(ys)),
        }
        rows.append(json.dumps(row))
    atomic_write_text(path, "".join(r + "\n" for r in rows))
