"""Sums as a task for the MDM: the prompt `n1+...+nK=` is given, the answer region is masked and
either phrasing is right (upo.tasks.sums.layout)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..base import Batch, SpecTask
from ..records import parse_lines
from .data import SumsStream, draw_item, key_of, parse_line, write_jsonl
from .layout import (
    SumsSpec,
    encode,
    final_digits_right,
    numbers_of,
    solved_batch,
)


@dataclass
class SumsTask(SpecTask):
    spec: SumsSpec
    difficulty_name: ClassVar[str] = "digits"

    @property
    def default_difficulty(self) -> tuple[int, int]:
        return (1, self.spec.digits)

    @property
    def max_difficulty(self) -> int:
        return self.spec.digits

    def structure_defaults(self) -> dict:
        return {"position_groups": [self.spec.place]}

    def stream(self, seed: int) -> SumsStream:
        return SumsStream(self.spec, seed)

    def batch_from_numbers(self, numbers: np.ndarray) -> Batch:
        """Items with the answer masked; `answers` holds the worked phrasing."""
        numbers = np.asarray(numbers, dtype=np.int64).reshape(-1, self.spec.terms)
        tokens = np.stack([encode(self.spec, row, "masked") for row in numbers])
        full = np.stack([encode(self.spec, row, "worked") for row in numbers])
        digits = self.difficulty_of(numbers)
        return Batch(
            tokens, full, np.ones_like(tokens, dtype=bool), [{"digits": int(n)} for n in digits]
        )

    @staticmethod
    def difficulty_of(numbers: np.ndarray) -> np.ndarray:
        return np.array([len(str(int(row.max()))) for row in numbers], dtype=np.int64)

    def solved(self, batch: Batch, outputs: np.ndarray) -> np.ndarray:
        return solved_batch(self.spec, batch.tokens, outputs)

    def partial_credit(self, batch: Batch, outputs: np.ndarray) -> np.ndarray:
        return final_digits_right(self.spec, batch.tokens, outputs)

    def difficulty(self, batch: Batch) -> np.ndarray:
        """Digits of the longest number."""
        return self.difficulty_of(numbers_of(self.spec, batch.tokens))

    def keys(self, batch: Batch) -> list[str]:
        return [key_of(row) for row in numbers_of(self.spec, batch.tokens)]

    def generate(
        self,
        n: int,
        difficulty: tuple[int, int],
        seed: int,
        exclude: set[str] = frozenset(),
        progress=None,
        max_attempts: int = 5000,
    ) -> Batch:
        """n distinct items whose longest number has lo..hi digits, none in `exclude`."""
        items = self.draw_distinct(
            lambda rng: draw_item(self.spec, difficulty, rng),
            n, difficulty, seed, exclude, progress, max_attempts, "sums",
        )  # fmt: skip
        return self.batch_from_numbers(np.stack(items))

    def check(self, path, skip_invalid: bool = False, progress=None) -> tuple[Batch, list[str]]:
        rows, errors = parse_lines(
            path, lambda line: parse_line(line, self.spec), skip_invalid, "sums", progress
        )
        numbers = np.array(rows, dtype=np.int64).reshape(-1, self.spec.terms)
        return self.batch_from_numbers(numbers), errors

    def write(self, path, batch: Batch) -> None:
        write_jsonl(path, self.spec, numbers_of(self.spec, batch.tokens))
