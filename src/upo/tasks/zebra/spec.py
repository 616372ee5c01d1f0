"""Zebra puzzles: sizes, clue kinds, the token layout, and the exact verifier.

A puzzle has N houses in a row and M attributes (colour, pet, ...); each attribute gives each house
a different one of its N values. A solution is an N x M grid: solution[h, m] = value of attribute m
in house h. Clues relate "the house whose attribute a has value v", written (a, v):

  same   (a1, v1) (a2, v2)   the same house
  left   (a1, v1) (a2, v2)   somewhere left of (a smaller house index)
  next   (a1, v1) (a2, v2)   in neighbouring houses
  at     (a1, v1) house p    in house p
  not_at (a1, v1) house p    not in house p

A clue is stored as five ints (kind, a1, v1, x, y): (a2, v2) for the relations, (p, -1) for at and
not_at. For the MDM a puzzle is a fixed-length sequence: `max_clues` slots of five tokens (unused
slots PAD), then the N x M answer grid house by house, which is what gets masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..base import positions_from

KINDS = ("same", "left", "next", "at", "not_at")
SAME, LEFT, NEXT, AT, NOT_AT = range(5)
FIELDS = 5  # tokens per clue


@dataclass(frozen=True)
class ZebraSpec:
    houses: int
    attributes: int
    max_clues: int  # clue slots in the prompt; the generator only makes puzzles that fit

    @property
    def name(self) -> str:
        return f"zebra{self.houses}" if self.houses == self.attributes else self.key

    @property
    def key(self) -> str:
        return f"zebra{self.houses}x{self.attributes}"

    # Token ids: values 0..N-1 come first so the answer grid reads as values.
    @property
    def kind0(self) -> int:
        return self.houses

    @property
    def attr0(self) -> int:
        return self.kind0 + len(KINDS)

    @property
    def house0(self) -> int:
        return self.attr0 + self.attributes

    @property
    def pad(self) -> int:
        return self.house0 + self.houses

    @property
    def mask(self) -> int:
        return self.pad + 1

    @property
    def vocab_size(self) -> int:
        return self.mask + 1

    @property
    def cells(self) -> int:
        return self.houses * self.attributes

    @property
    def answer_start(self) -> int:
        return self.max_clues * FIELDS

    @property
    def seq_len(self) -> int:
        return self.answer_start + self.cells

    @cached_property
    def answer_positions(self) -> np.ndarray:
        return positions_from(self.seq_len, self.answer_start)

    @cached_property
    def position_groups(self) -> list[list[int]]:
        """Two id lists for the MDM: (field of a clue | 5 + house of a cell) and (clue slot |
        max_clues + attribute of a cell), so cells of one house or one attribute start out alike."""
        field = [f for _ in range(self.max_clues) for f in range(FIELDS)]
        slot = [c for c in range(self.max_clues) for _ in range(FIELDS)]
        field += [FIELDS + h for h in range(self.houses) for _ in range(self.attributes)]
        slot += [self.max_clues + m for _ in range(self.houses) for m in range(self.attributes)]
        return [field, slot]

    @cached_property
    def position_tokens(self) -> list[list[int]]:
        """Per position, the attribute token and the house token that name an answer cell (-1 on
        the prompt): the MDM adds their token embeddings, the same vectors clues are written in."""
        none = [-1] * self.answer_start
        attr = none + [self.attr0 + m for _ in range(self.houses) for m in range(self.attributes)]
        house = none + [self.house0 + h for h in range(self.houses) for _ in range(self.attributes)]
        return [attr, house]

    @cached_property
    def token_slots(self) -> list[list[int]]:
        """[slot, field] per position for the MDM: each clue is one slot of five fields; the
        answer cells are in no slot. The prompt's slots and fields are those of position_groups."""
        field, slot = self.position_groups
        start = self.answer_start
        return [slot[:start] + [-1] * self.cells, field[:start] + [0] * self.cells]


def encode_clues(spec: ZebraSpec, clues: np.ndarray) -> np.ndarray:
    """[C, 5] clues -> [max_clues * 5] prompt tokens (PAD in the unused slots)."""
    out = np.full((spec.max_clues, FIELDS), spec.pad, dtype=np.int64)
    clues = np.asarray(clues, dtype=np.int64).reshape(-1, FIELDS)
    c = len(clues)
    if c > spec.max_clues:
        raise ValueError(f"{c} clues do not fit in {spec.max_clues} slots")
    relation = clues[:, 0] <= NEXT
    out[:c, 0] = spec.kind0 + clues[:, 0]
    out[:c, 1] = spec.attr0 + clues[:, 1]
    out[:c, 2] = clues[:, 2]
    out[:c, 3] = np.where(relation, spec.attr0 + clues[:, 3], spec.house0 + clues[:, 3])
    out[:c, 4] = np.where(relation, clues[:, 4], spec.pad)
    return out.reshape(-1)


def decode_clues(spec: ZebraSpec, tokens: np.ndarray) -> np.ndarray:
    """Inverse of encode_clues for one prompt: [C, 5] clues of the used slots."""
    slots = np.asarray(tokens)[: spec.answer_start].reshape(spec.max_clues, FIELDS)
    used = slots[slots[:, 0] != spec.pad]
    kind = used[:, 0] - spec.kind0
    relation = kind <= NEXT
    return np.stack(
        [
            kind,
            used[:, 1] - spec.attr0,
            used[:, 2],
            np.where(relation, used[:, 3] - spec.attr0, used[:, 3] - spec.house0),
            np.where(relation, used[:, 4], -1),
        ],
        axis=1,
    ).astype(np.int64)


def house_of(grids: np.ndarray) -> np.ndarray:
    """[B, N, M] solutions -> [B, M, N] house of each (attribute, value). Only meaningful for
    grids whose attributes are permutations."""
    b, n, m = grids.shape
    out = np.zeros((b, m, n), dtype=np.int64)
    bi, hi, mi = np.meshgrid(np.arange(b), np.arange(n), np.arange(m), indexing="ij")
    out[bi, mi, grids] = hi
    return out


def clue_holds(clues: np.ndarray, where: np.ndarray) -> np.ndarray:
    """[C] clues, [B, M, N] house_of -> [B, C] bool: which clues each grid satisfies."""
    clues = np.asarray(clues).reshape(-1, FIELDS)
    kind, a1, v1, x, y = clues.T
    h1 = where[:, a1, v1]  # [B, C]
    relation = kind <= NEXT
    h2 = where[:, np.where(relation, x, 0), np.where(relation, y, 0)]  # only read for relations
    return np.select(
        [kind == SAME, kind == LEFT, kind == NEXT, kind == AT],
        [h1 == h2, h1 < h2, np.abs(h1 - h2) == 1, h1 == x],
        default=h1 != x,
    )


def valid_grids(spec: ZebraSpec, grids: np.ndarray) -> np.ndarray:
    """[B] bool: every attribute column holds each value exactly once."""
    grids = np.asarray(grids)
    if grids.size == 0:
        return np.zeros(len(grids), dtype=bool)
    in_range = ((grids >= 0) & (grids < spec.houses)).all(axis=(1, 2))
    safe = np.where(in_range[:, None, None], grids, 0)
    perm = (np.sort(safe, axis=1) == np.arange(spec.houses)[:, None]).all(axis=(1, 2))
    return in_range & perm


def answer_grids(spec: ZebraSpec, tokens: np.ndarray) -> np.ndarray:
    """[B, L] -> [B, N, M] the answer part as a grid."""
    return np.asarray(tokens)[:, spec.answer_start :].reshape(-1, spec.houses, spec.attributes)


def solved_batch(spec: ZebraSpec, prompts: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """[B] 1.0 where the output grid is valid and satisfies every clue of its prompt. Clue sets
    are unique-solution, so this is "equals the solution", checked without trusting a stored one."""
    grids = answer_grids(spec, outputs)
    ok = valid_grids(spec, grids)
    out = np.zeros(len(grids))
    for i in np.flatnonzero(ok):
        clues = decode_clues(spec, prompts[i])
        out[i] = float(clue_holds(clues, house_of(grids[i : i + 1]))[0].all())
    return out


def render(spec: ZebraSpec, clues: np.ndarray, grid: np.ndarray | None = None) -> str:
    """Clues in words (attribute letters A, B, ..., values 1..N, houses 1..N) and the grid."""
    lines = []
    for kind, a1, v1, x, y in np.asarray(clues).reshape(-1, FIELDS).tolist():
        first = f"{chr(65 + a1)}{v1 + 1}"
        if kind <= NEXT:
            rel = ("is in the same house as", "is somewhere left of", "is next to")[kind]
            lines.append(f"{first} {rel} {chr(65 + x)}{y + 1}")
        else:
            lines.append(f"{first} is {'' if kind == AT else 'not '}in house {x + 1}")
    if grid is not None:
        for h, row in enumerate(np.asarray(grid).reshape(spec.houses, spec.attributes)):
            lines.append(
                f"house {h + 1}: " + " ".join(f"{chr(65 + m)}{v + 1}" for m, v in enumerate(row))
            )
    return "\n".join(lines)
