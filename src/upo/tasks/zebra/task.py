"""Zebra puzzles as a task for the MDM: the clues are the prompt, the N x M grid is masked."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..base import Batch, SpecTask
from ..records import distinct, parse_lines, require_file
from .generate import ZebraStream, make_puzzle
from .io import parse_line, write_jsonl
from .spec import ZebraSpec, answer_grids, decode_clues, encode_clues, solved_batch


@dataclass
class ZebraTask(SpecTask):
    spec: ZebraSpec
    difficulty_name: ClassVar[str] = "clues"

    @property
    def default_difficulty(self) -> tuple[int, int]:
        return (1, self.spec.max_clues)

    @property
    def max_difficulty(self) -> int:
        return self.spec.max_clues

    def structure_defaults(self) -> dict:
        return {
            "position_groups": self.spec.position_groups,
            "position_tokens": self.spec.position_tokens,
            "token_slots": self.spec.token_slots,
        }

    def stream(self, seed: int) -> ZebraStream:
        return ZebraStream(self.spec, seed)

    def batch_from_items(self, items) -> Batch:
        """Batch from (clues [C, 5], grid [N, M]) pairs: prompt + masked grid, answer = solution."""
        prompts = np.stack([encode_clues(self.spec, c) for c, _ in items])
        grids = np.stack([np.asarray(g).reshape(-1) for _, g in items]).astype(np.int64)
        answers = np.concatenate([prompts, grids], axis=1)
        tokens = answers.copy()
        tokens[:, self.spec.answer_start :] = self.mask_id
        return Batch(
            tokens,
            answers,
            np.ones_like(tokens, dtype=bool),
            [{"clues": len(c)} for c, _ in items],
        )

    def items(self, batch: Batch):
        """(clues, grid) pairs back from a batch."""
        grids = answer_grids(self.spec, batch.answers)
        return [(decode_clues(self.spec, t), g) for t, g in zip(batch.tokens, grids)]

    def solved(self, batch: Batch, outputs: np.ndarray) -> np.ndarray:
        return solved_batch(self.spec, batch.tokens, outputs)

    def partial_credit(self, batch: Batch, outputs: np.ndarray) -> np.ndarray:
        """Fraction of the N x M cells equal to the (unique) solution."""
        start = self.spec.answer_start
        return (np.asarray(outputs)[:, start:] == batch.answers[:, start:]).mean(1)

    def difficulty(self, batch: Batch) -> np.ndarray:
        """Number of clues per puzzle."""
        slots = batch.tokens[:, : self.spec.answer_start : 5]
        return (slots != self.spec.pad).sum(1)

    def keys(self, batch: Batch) -> list[str]:
        """The clue set, order-free: two puzzles with the same clues are the same puzzle."""
        return [key_of(c) for c, _ in self.items(batch)]

    def generate(
        self,
        n: int,
        difficulty: tuple[int, int],
        seed: int,
        exclude: set[str] = frozenset(),
        progress=None,
        max_attempts: int = 5000,
    ) -> Batch:
        """n distinct puzzles with unique solutions and lo..hi clues."""
        lo, hi = difficulty
        rng = np.random.default_rng(seed)

        def draw():
            made = make_puzzle(self.spec, rng)
            if made is None or not lo <= len(made[0]) <= hi:
                return "", None  # "" is pre-seeded below: counts as a miss
            return key_of(made[0]), made

        items = list(
            distinct(
                draw,
                n,
                set(exclude) | {""},
                max_attempts,
                f"{self.name} puzzles with {lo}-{hi} clues",
                progress,
            )
        )
        return self.batch_from_items(items)

    def check(self, path, skip_invalid: bool = False, progress=None) -> tuple[Batch, list[str]]:
        """(valid puzzles, messages of skipped lines); every puzzle is proved unique."""
        items, errors = parse_lines(
            path, lambda line: parse_line(line, self.spec, True), skip_invalid, "puzzles", progress
        )
        return self.batch_from_items(items), errors

    def load(self, path, skip_invalid: bool = False) -> Batch:
        require_file(path)
        items, errors = parse_lines(
            path, lambda line: parse_line(line, self.spec, False), skip_invalid, "puzzles"
        )
        if errors:
            print(f"{path}: skipped {len(errors)} invalid lines", file=sys.stderr)
        return self.batch_from_items(items)

    def write(self, path, batch: Batch) -> None:
        write_jsonl(path, self.spec, self.items(batch))

    def describe(self, batch: Batch) -> str:
        return f"{self.spec.houses}x{self.spec.attributes}, {super().describe(batch)}"


def key_of(clues: np.ndarray) -> str:
    return ";".join(sorted(",".join(map(str, c)) for c in np.asarray(clues).tolist()))
