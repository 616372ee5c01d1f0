"""Complete-grid sampler (the MDM's infinite training stream) and the unique-puzzle generator."""

from __future__ import annotations

import numpy as np

from ...errors import UpoError
from .grid import MASK, SudokuSpec
from .solver import _tables, has_other_solution, solve


def base_grid(spec: SudokuSpec) -> np.ndarray:
    """A fixed valid grid: row i is a shifted pattern so that rows, columns and boxes all work."""
    r, c, n = spec.box_rows, spec.box_cols, spec.n
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    return ((c * (i % r) + i // r + j) % n + 1).reshape(-1).astype(np.int64)


def _random_perms(rng: np.random.Generator, batch: int, groups: int, size: int) -> np.ndarray:
    """[batch, groups, size] independent random permutations of range(size)."""
    return np.argsort(rng.random((batch, groups, size)), axis=-1)


def transform_grids(spec: SudokuSpec, grids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply random validity-preserving symmetries to each grid of [B, cells].

    Digit relabelling, row permutations within bands and of bands, the same for columns and
    stacks, and (for square boxes) transposition. Each grid gets its own transforms.
    """
    r, c, n = spec.box_rows, spec.box_cols, spec.n
    b = grids.shape[0]
    g = grids.reshape(b, n, n)
    # Bands are groups of r rows (there are c of them); stacks are groups of c columns (r of them).
    band_order = _random_perms(rng, b, 1, c)[:, 0]  # [B, c]
    row_within = _random_perms(rng, b, c, r)  # [B, c, r]
    rows = band_order[:, :, None] * r + np.take_along_axis(row_within, band_order[:, :, None], 1)
    rows = rows.reshape(b, n)
    stack_order = _random_perms(rng, b, 1, r)[:, 0]
    col_within = _random_perms(rng, b, r, c)
    cols = stack_order[:, :, None] * c + np.take_along_axis(col_within, stack_order[:, :, None], 1)
    cols = cols.reshape(b, n)
    g = np.take_along_axis(g, rows[:, :, None].repeat(n, 2), axis=1)
    g = np.take_along_axis(g, cols[:, None, :].repeat(n, 1), axis=2)
    if r == c:
        flip = rng.random(b) < 0.5
        g = np.where(flip[:, None, None], g.transpose(0, 2, 1), g)
    relabel = np.concatenate(
        [np.zeros((b, 1), dtype=np.int64), 1 + _random_perms(rng, b, 1, n)[:, 0]], axis=1
    )
    g = np.take_along_axis(relabel, g.reshape(b, -1), axis=1)
    return g.reshape(b, -1)


def random_base_grid(spec: SudokuSpec, rng: np.random.Generator) -> np.ndarray:
    """A random valid grid from outside the base grid's symmetry class: fill the boxes on the
    diagonal (they share no row or column) with random permutations and let the solver finish."""
    while True:  # small grids can get diagonal boxes that no grid completes: draw again
        grid = np.zeros(spec.cells, dtype=np.int64)
        for k in range(min(spec.box_rows, spec.box_cols)):
            in_box = (spec.row_of // spec.box_rows == k) & (spec.col_of // spec.box_cols == k)
            grid[in_box] = rng.permutation(spec.n) + 1
        found = solve(spec, grid, limit=1)
        if found:
            return found[0]


def base_pool(spec: SudokuSpec, size: int, rng: np.random.Generator) -> np.ndarray:
    """[size, cells] distinct-ish base grids; the fixed pattern grid is always the first."""
    return np.stack([base_grid(spec)] + [random_base_grid(spec, rng) for _ in range(size - 1)])


def sample_grids(
    spec: SudokuSpec, batch: int, rng: np.random.Generator, pool: np.ndarray | None = None
) -> np.ndarray:
    """[batch, cells] random complete valid grids (int64 tokens 1..n): a random base grid from
    `pool` (default: the pattern grid) under random symmetry transforms."""
    if pool is None:
        pool = base_grid(spec)[None]
    bases = pool[rng.integers(0, len(pool), size=batch)]
    return transform_grids(spec, bases, rng)


class GridStream:
    """The MDM's infinite training stream: batches of random complete grids, deterministic for a
    seed, with its position (batches drawn) so a resumed run continues the same stream."""

    def __init__(self, spec: SudokuSpec, seed: int, pool_size: int = 64):
        self.spec = spec
        self.pool = base_pool(spec, pool_size, np.random.default_rng([seed, 0]))
        self.seed = seed

    def batch(self, index: int, size: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1, index])
        return sample_grids(self.spec, size, rng, self.pool)


def make_puzzle(
    spec: SudokuSpec, solution: np.ndarray, blanks: int, rng: np.random.Generator
) -> np.ndarray | None:
    """Blank cells one at a time, in random order, keeping only removals that leave the solution
    unique, until `blanks` cells are blank. None when the grid runs out of removable cells first.
    """
    peers = _tables(spec)[0]
    puzzle = solution.copy()
    removed = 0
    for cell in rng.permutation(spec.cells):
        digit = int(puzzle[cell])
        puzzle[cell] = MASK
        # Fast path: if the peers' givens leave only this digit, the solution stays unique.
        used = {int(puzzle[p]) for p in peers[cell]}
        forced = len(used - {MASK}) == spec.n - 1
        if forced or not has_other_solution(spec, puzzle, int(cell), digit):
            removed += 1
            if removed == blanks:
                return puzzle
        else:
            puzzle[cell] = digit
    return None


def generate_puzzles(
    spec: SudokuSpec,
    count: int,
    blanks: tuple[int, int],
    seed: int,
    exclude: set[str] = frozenset(),
    progress=None,
    max_attempts: int | None = None,
):
    """Yield `count` distinct (puzzle, solution) token pairs with unique solutions.

    Deterministic for a seed. The number of blanks of each puzzle is drawn uniformly from the
    inclusive range `blanks`. Puzzles whose string is in `exclude` (e.g. a test file) are skipped,
    which is how train and test files are kept disjoint.

    `max_attempts` bounds the consecutive draws that give no new puzzle (a duplicate, an excluded
    puzzle, or a grid that cannot reach the blank count). Small Sudokus have only a few thousand
    distinct puzzles, so without a bound asking for more would loop forever; when it is reached,
    UpoError says how many distinct puzzles were found. None means no bound.
    """
    lo, hi = blanks
    if not 1 <= lo <= hi <= spec.cells - 1:
        raise ValueError(f"blanks range {lo}-{hi} is impossible for {spec.name}")
    rng = np.random.default_rng(seed)
    pool = base_pool(spec, 16, rng)
    seen = set(exclude)
    made = 0
    misses = 0  # consecutive draws without a new puzzle
    while made < count:
        if max_attempts is not None and misses >= max_attempts:
            raise UpoError(
                f"gave up after {misses} consecutive draws without a new puzzle: found only "
                f"{made} distinct {spec.name} puzzles with {lo}-{hi} blanks"
                + (f" not in the {len(exclude)} excluded ones" if exclude else "")
                + f", {count} were asked for"
            )
        misses += 1
        solution = sample_grids(spec, 1, rng, pool)[0]
        target = int(rng.integers(lo, hi + 1))
        puzzle = make_puzzle(spec, solution, target, rng)
        if puzzle is None:
            continue
        key = "".join(map(str, puzzle.tolist()))
        if key in seen:
            continue
        seen.add(key)
        made += 1
        misses = 0
        if progress is not None:
            progress(1)
        yield puzzle, solution
