"""Random additions: the MDM's infinite training stream and the distinct-item generator.

An item with n digits has one operand of exactly n digits; the other has n digits half of the
time and otherwise a uniform 1..n, and the two are swapped at random. Digits are uniform, so carry
chains (runs of columns summing to 9) are as frequent as in random numbers, unless the spec's
carry_rate makes columns sum to 9 on purpose (the `addition-carry` variant).
"""

from __future__ import annotations

import numpy as np

from .layout import EQUALS, PLUS, AdditionSpec, exact_sum


def random_operands(
    spec: AdditionSpec, n_digits: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """([B, D], [B, D]) zero-padded digit arrays with the longer operand n_digits[i] long."""
    b = len(n_digits)
    d = spec.digits
    other = np.where(rng.random(b) < 0.5, n_digits, rng.integers(1, n_digits + 1))

    def number(length: np.ndarray) -> np.ndarray:
        digits = rng.integers(0, 10, size=(b, d))
        col = np.arange(d)[None, :]
        start = d - length[:, None]  # index of the leading digit
        lead = rng.integers(1, 10, size=b)  # a number's leading digit is not 0 ...
        digits = np.where(col == start, lead[:, None], digits)
        digits[length == 1, -1] = rng.integers(0, 10, size=int((length == 1).sum()))  # ... but 0 is
        return np.where(col < start, 0, digits)

    x, y = number(n_digits), number(other)
    if spec.carry_rate:
        # Columns where both numbers have digits may be set to sum to 9 (keeping y's lead digit
        # non-zero, so the number of digits stays what was drawn).
        col = np.arange(d)[None, :]
        both = col >= d - other[:, None]
        lead = col == d - other[:, None]
        chain = both & (rng.random((b, d)) < spec.carry_rate) & ~(lead & (x == 9))
        y = np.where(chain, 9 - x, y)
    swap = rng.random(b) < 0.5
    return np.where(swap[:, None], y, x), np.where(swap[:, None], x, y)


def assemble(spec: AdditionSpec, a: np.ndarray, b: np.ndarray, with_answer: bool) -> np.ndarray:
    """[B, L] tokens from digit arrays; the answer is the exact sum or (prompt only) MASK."""
    from .layout import MASK

    rows = len(a)
    prompt = np.concatenate(
        [a, np.full((rows, 1), PLUS), b, np.full((rows, 1), EQUALS)], axis=1
    ).astype(np.int64)
    answer = np.full((rows, spec.digits + 1), MASK, dtype=np.int64)
    tokens = np.concatenate([prompt, answer], axis=1)
    if with_answer:
        tokens[:, spec.answer_start :] = exact_sum(spec, tokens)
    return tokens


class AdditionStream:
    """Batches of complete `a+b=c` sequences, 1..D digits uniformly; deterministic for a seed and
    batch index, so a resumed run continues the same stream."""

    def __init__(self, spec: AdditionSpec, seed: int):
        self.spec = spec
        self.seed = seed

    def batch(self, index: int, size: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1, index])
        n = rng.integers(1, self.spec.digits + 1, size=size)
        a, b = random_operands(self.spec, n, rng)
        return assemble(self.spec, a, b, with_answer=True)


def digit_string(digits: np.ndarray) -> str:
    """Digits (zero-padded) -> the number as people write it: no leading zeros, '0' for zero."""
    return "".join(map(str, digits.tolist())).lstrip("0") or "0"


def draw_item(spec: AdditionSpec, digits: tuple[int, int], rng: np.random.Generator):
    """(key 'a+b', (a digits, b digits)) of one random item with lo..hi digits."""
    lo, hi = digits
    n = rng.integers(lo, hi + 1, size=1)
    a, b = random_operands(spec, n, rng)
    return f"{digit_string(a[0])}+{digit_string(b[0])}", (a[0], b[0])
