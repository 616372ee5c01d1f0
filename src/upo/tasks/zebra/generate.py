"""Random Zebra puzzles with unique solutions, and the MDM's training stream.

A puzzle is made from a random solution: true clues are drawn (kind first, with the weights below)
until the solver proves the solution unique, then clues are dropped in random order whenever the
rest still prove it, so no clue is redundant on its own. The stream multiplies a pool of such
puzzles by transforms that keep a puzzle's unique solution unique: relabelling each attribute's
values, reordering the attributes, mirroring the row of houses (left of becomes right of, so the
clue's two sides swap), and shuffling clue order. Generating fresh puzzles with the solver is too
slow to feed training; the transforms cost microseconds.
"""

from __future__ import annotations

import numpy as np

from .solver import is_unique
from .spec import AT, FIELDS, LEFT, NEXT, NOT_AT, SAME, ZebraSpec, encode_clues

# Kinds drawn while building a clue set. `at` is drawn less: each one pins a value outright.
KIND_WEIGHTS = np.array([0.25, 0.15, 0.2, 0.15, 0.25])  # same, left, next, at, not_at


def random_solution(spec: ZebraSpec, rng: np.random.Generator) -> np.ndarray:
    """[N, M]: each attribute column a random permutation of the values."""
    return np.argsort(rng.random((spec.attributes, spec.houses)), axis=1).T.copy()


def random_true_clue(spec: ZebraSpec, grid: np.ndarray, rng: np.random.Generator) -> tuple:
    n, m = spec.houses, spec.attributes
    kind = int(rng.choice(5, p=KIND_WEIGHTS))
    if kind == SAME:
        h = int(rng.integers(n))
        a1, a2 = (int(a) for a in rng.choice(m, size=2, replace=False))
        return (SAME, a1, int(grid[h, a1]), a2, int(grid[h, a2]))
    if kind in (LEFT, NEXT):
        if kind == LEFT:
            h1, h2 = sorted(int(h) for h in rng.choice(n, size=2, replace=False))
        else:
            h1 = int(rng.integers(n - 1))
            h1, h2 = (h1, h1 + 1) if rng.random() < 0.5 else (h1 + 1, h1)
        a1, a2 = int(rng.integers(m)), int(rng.integers(m))
        return (kind, a1, int(grid[h1, a1]), a2, int(grid[h2, a2]))
    h, a = int(rng.integers(n)), int(rng.integers(m))
    if kind == AT:
        return (AT, a, int(grid[h, a]), h, -1)
    other = int((h + rng.integers(1, n)) % n)
    return (NOT_AT, a, int(grid[h, a]), other, -1)


def make_puzzle(spec: ZebraSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """(clues [C, 5], solution [N, M]) with a unique solution and no clue redundant on its own;
    None when the minimal set still needs more than `max_clues` clues."""
    grid = random_solution(spec, rng)
    clues: list[tuple] = []
    seen = set()
    while not (clues and is_unique(spec, np.array(clues))):
        clue = random_true_clue(spec, grid, rng)
        if clue not in seen:
            seen.add(clue)
            clues.append(clue)
    for drop in [clues[i] for i in rng.permutation(len(clues))]:
        trial = [c for c in clues if c != drop]
        if trial and is_unique(spec, np.array(trial)):
            clues = trial
    if len(clues) > spec.max_clues:
        return None
    order = rng.permutation(len(clues))
    return np.array(clues, dtype=np.int64)[order], grid


def puzzle_from_seed(spec: ZebraSpec, seed: int, index: int):
    """Puzzle number `index` of a seed's sequence: its own rng, so any one can be (re)made alone."""
    rng = np.random.default_rng([seed, 0, index])
    while True:
        made = make_puzzle(spec, rng)
        if made is not None:
            return made


def transform(
    spec: ZebraSpec, clues: np.ndarray, counts: np.ndarray, grids: np.ndarray, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Random solution-preserving transforms of a batch: clues [B, C, 5] (rows past counts[i]
    unused), grids [B, N, M]. Returns (prompt tokens [B, max_clues * 5], grids [B, N, M])."""
    b, c, _ = clues.shape
    n, m = spec.houses, spec.attributes
    bi = np.arange(b)[:, None]
    kind, a1, v1, x, y = (clues[..., k].copy() for k in range(FIELDS))
    relation = kind <= NEXT
    # Relabel values within each attribute, then rename the attributes.
    values = np.argsort(rng.random((b, m, n)), axis=2)  # values[i, a, v] = new label of v
    attrs = np.argsort(rng.random((b, m)), axis=1)  # attrs[i, a] = new index of attribute a
    v1 = values[bi, a1, v1]
    y = np.where(relation, values[bi, x * relation, np.maximum(y, 0)], y)
    a1 = attrs[bi, a1]
    x = np.where(relation, attrs[bi, x * relation], x)
    hi = np.arange(n)[None, :, None]
    grids = np.take_along_axis(values[:, None, :, :], grids[..., None], axis=3)[..., 0]
    new_grids = np.empty_like(grids)
    new_grids[bi[:, :, None], hi, attrs[:, None, :]] = grids
    grids = new_grids
    # Mirror the row of houses for half the batch.
    flip = (rng.random(b) < 0.5)[:, None]
    x = np.where(flip & ~relation, n - 1 - x, x)
    swap = flip & (kind == LEFT)
    a1, v1, x, y = (
        np.where(swap, x, a1),
        np.where(swap, y, v1),
        np.where(swap, a1, x),
        np.where(swap, v1, y),
    )
    grids = np.where(flip[:, :, None], grids[:, ::-1, :], grids)
    # Shuffle the order of the used clues; unused slots stay at the end.
    used = np.arange(c)[None, :] < counts[:, None]
    order = np.argsort(np.where(used, rng.random((b, c)), 2.0), axis=1)
    out = np.stack([kind, a1, v1, x, y], axis=-1)[bi, order]
    prompts = np.stack(
        [encode_clues(spec, out[i, : counts[i]]) for i in range(b)]
    )  # small loop: b encodes of at most max_clues rows
    return prompts, grids


class ZebraStream:
    """Batches of complete (clues, solution) sequences for MDM training.

    The pool starts with `base` puzzles and grows by `grow` per batch, puzzle k always being
    puzzle_from_seed(seed, k): a resumed run rebuilds exactly the pool it had. Each batch draws
    pool puzzles and disguises them with `transform`.
    """

    def __init__(self, spec: ZebraSpec, seed: int, base: int = 1000, grow: int = 1):
        self.spec, self.seed, self.base, self.grow = spec, seed, base, grow
        c = spec.max_clues
        self.clues = np.zeros((0, c, FIELDS), dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.grids = np.zeros((0, spec.houses, spec.attributes), dtype=np.int64)

    def _extend(self, size: int) -> None:
        new_c, new_n, new_g = [], [], []
        for k in range(len(self.counts), size):
            clues, grid = puzzle_from_seed(self.spec, self.seed, k)
            padded = np.zeros((self.spec.max_clues, FIELDS), dtype=np.int64)
            padded[: len(clues)] = clues
            new_c.append(padded)
            new_n.append(len(clues))
            new_g.append(grid)
        if new_c:
            self.clues = np.concatenate([self.clues, np.stack(new_c)])
            self.counts = np.concatenate([self.counts, np.array(new_n)])
            self.grids = np.concatenate([self.grids, np.stack(new_g)])

    def batch(self, index: int, size: int) -> np.ndarray:
        pool = self.base + self.grow * index
        self._extend(pool)
        rng = np.random.default_rng([self.seed, 1, index])
        pick = rng.integers(0, pool, size=size)
        prompts, grids = transform(
            self.spec, self.clues[pick], self.counts[pick], self.grids[pick], rng
        )
        return np.concatenate([prompts, grids.reshape(size, -1)], axis=1)
