"""Multi-digit addition as a task for the MDM: the prompt `a+b=` is given, the sum is masked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..base import Batch, SpecTask
from ..records import parse_lines
from .generate import AdditionStream, assemble, digit_string, draw_item
from .io import parse_line, write_jsonl
from .layout import (
    MASK,
    AdditionSpec,
    cell_acc_batch,
    digits_of,
    operands,
    solved_batch,
)


@dataclass
class AdditionTask(SpecTask):
    spec: AdditionSpec
    difficulty_name: ClassVar[str] = "digits"

    @property
    def default_difficulty(self) -> tuple[int, int]:
        return (1, self.spec.digits)

    @property
    def max_difficulty(self) -> int:
        return self.spec.digits

    def structure_defaults(self) -> dict:
        return {"position_groups": [self.spec.place]}

    def stream(self, seed: int) -> AdditionStream:
        return AdditionStream(self.spec, seed)

    def batch_from_digits(self, a: np.ndarray, b: np.ndarray) -> Batch:
        full = assemble(self.spec, np.asarray(a), np.asarray(b), with_answer=True)
        tokens = full.copy()
        tokens[:, self.spec.answer_positions] = MASK
        digits = digits_of(self.spec, tokens)
        return Batch(
            tokens, full, np.ones_like(tokens, dtype=bool), [{"digits": int(n)} for n in digits]
        )

    def solved(self, batch: Batch, outputs: np.ndarray) -> np.ndarray:
        return solved_batch(self.spec, batch.tokens, outputs)

    def partial_credit(self, batch: Batch, outputs: np.ndarray) -> np.ndarray:
        return cell_acc_batch(self.spec, batch.tokens, outputs)

    def difficulty(self, batch: Batch) -> np.ndarray:
        """Digits of the longer operand: what solve rate is plotted against."""
        return digits_of(self.spec, batch.tokens)

    def keys(self, batch: Batch) -> list[str]:
        """'a+b' per item: what makes two items the same (train/test disjointness)."""
        a, b = operands(self.spec, batch.tokens)
        return [f"{digit_string(x)}+{digit_string(y)}" for x, y in zip(a, b)]

    def generate(
        self,
        n: int,
        difficulty: tuple[int, int],
        seed: int,
        exclude: set[str] = frozenset(),
        progress=None,
        max_attempts: int = 5000,
    ) -> Batch:
        """n distinct items with lo..hi digits, none of whose 'a+b' is in `exclude`."""
        items = self.draw_distinct(
            lambda rng: draw_item(self.spec, difficulty, rng),
            n, difficulty, seed, exclude, progress, max_attempts, "additions",
        )  # fmt: skip
        return self.batch_from_digits(
            np.stack([a for a, _ in items]), np.stack([b for _, b in items])
        )

    def check(self, path, skip_invalid: bool = False, progress=None) -> tuple[Batch, list[str]]:
        """(valid items, messages of the skipped bad lines); every answer given is verified."""
        pairs, errors = parse_lines(
            path, lambda line: parse_line(line, self.spec), skip_invalid, "additions", progress
        )
        d = self.spec.digits
        a = np.array([[int(ch) for ch in f"{x:0{d}d}"] for x, _ in pairs], dtype=np.int64)
        b = np.array([[int(ch) for ch in f"{y:0{d}d}"] for _, y in pairs], dtype=np.int64)
        return self.batch_from_digits(a, b), errors

    def write(self, path, batch: Batch) -> None:
        write_jsonl(path, self.spec, *operands(self.spec, batch.tokens))
