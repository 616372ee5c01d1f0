"""Random sums: the MDM's training stream (a mixture of the two phrasings), the distinct-item
generator, and the data files (JSONL, or plain `n1+n2+...+nK` / `...=total` lines)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...io_utils import atomic_write_text
from ..records import BadLine, json_object
from .layout import SumsSpec, encode


def random_numbers(spec: SumsSpec, n_digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[B, K] numbers; item i has at least one number of exactly n_digits[i] digits, the others
    a uniform 1..n_digits[i] digits each. Digits are uniform, leading digits non-zero."""
    b, k = len(n_digits), spec.terms
    lengths = rng.integers(1, n_digits[:, None] + 1, size=(b, k))
    lengths[np.arange(b), rng.integers(0, k, size=b)] = n_digits
    low = np.where(lengths == 1, 0, 10 ** (lengths - 1))
    return rng.integers(low, 10**lengths)


class SumsStream:
    """Batches of complete items, 1..D digits uniformly, each answered short with probability
    spec.short_rate and worked otherwise; deterministic for a seed and batch index."""

    def __init__(self, spec: SumsSpec, seed: int):
        self.spec = spec
        self.seed = seed

    def batch(self, index: int, size: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1, index])
        numbers = random_numbers(self.spec, rng.integers(1, self.spec.digits + 1, size=size), rng)
        short = rng.random(size) < self.spec.short_rate
        return np.stack(
            [encode(self.spec, row, "short" if s else "worked") for row, s in zip(numbers, short)]
        )


def key_of(numbers) -> str:
    return "+".join(str(int(n)) for n in numbers)


def draw_item(spec: SumsSpec, digits: tuple[int, int], rng: np.random.Generator):
    """(key, numbers) of one random item whose longest number has lo..hi digits."""
    lo, hi = digits
    numbers = random_numbers(spec, rng.integers(lo, hi + 1, size=1), rng)[0]
    return key_of(numbers), numbers


def parse_number(text: str, max_digits: int, what: str) -> int:
    if not text:
        raise BadLine(f"{what} is empty")
    if not text.isascii() or not text.isdigit():
        bad = next(ch for ch in text if not ("0" <= ch <= "9"))
        raise BadLine(f"{what} {text!r} has a non-digit character {bad!r}")
    if len(text.lstrip("0") or "0") > max_digits:
        raise BadLine(f"{what} {text!r} has more than {max_digits} digits")
    return int(text)


def parse_line(line: str, spec: SumsSpec) -> list[int]:
    """The K numbers of one line; BadLine naming the problem otherwise. JSONL rows are
    {"numbers": ["12", "345", ...], "answer": "..."}; "answer" is optional and must be right."""
    line = line.strip()
    if line[:1] in "{[":
        obj = json_object(line)
        texts = obj.get("numbers")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise BadLine('"numbers" must be a list of digit strings')
        answer = obj.get("answer")
        if answer is not None and not isinstance(answer, str):
            raise BadLine('"answer" must be a string')
    else:
        left, eq, answer = line.replace(" ", "").partition("=")
        texts = left.split("+")
        answer = answer if eq else None
    if len(texts) != spec.terms:
        raise BadLine(f"expected {spec.terms} numbers, got {len(texts)}")
    numbers = [parse_number(t, spec.digits, f"number {k + 1}") for k, t in enumerate(texts)]
    if answer is not None:
        total = parse_number(answer, spec.width, "answer")
        if total != sum(numbers):
            raise BadLine(f"answer {total} is wrong: the total is {sum(numbers)}")
    return numbers


def write_jsonl(path: str | Path, spec: SumsSpec, numbers: np.ndarray) -> None:
    """Rows of [N, K] numbers as JSONL, written atomically."""
    rows = []
    for row in numbers:
        texts = [str(int(n)) for n in row]
        digits = max(len(t) for t in texts)
        record = {
            "task": spec.name,
            "numbers": texts,
            "answer": str(int(sum(row))),
            "digits": digits,
        }
        rows.append(json.dumps(record))
    atomic_write_text(path, "".join(r + "\n" for r in rows))
