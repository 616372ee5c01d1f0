"""Exact Sudoku solver: bitmask backtracking with constraint propagation and fewest-candidates-first.

`count_solutions(..., limit=2)` is the uniqueness proof used by the generator and `upo data check`.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .grid import SudokuSpec


@cache
def _tables(spec: SudokuSpec):
    peers = spec.peers
    units = [tuple(u) for u in spec.units.tolist()]
    units_of = [tuple(k for k, u in enumerate(units) if i in u) for i in range(spec.cells)]
    return peers, units, units_of


def _propagate(spec, cand: list[int], grid: list[int]) -> bool:
    """Fill naked and hidden singles until none are left. False on contradiction."""
    peers, units, _ = _tables(spec)
    full = (1 << spec.n) - 1
    changed = True
    while changed:
        changed = False
        for i in range(spec.cells):
            if grid[i]:
                continue
            c = cand[i]
            if c == 0:
                return False
            if c & (c - 1) == 0:  # a single candidate
                grid[i] = c.bit_length()
                for p in peers[i]:
                    if cand[p] & c:
                        if grid[p]:
                            continue
                        cand[p] &= ~c
                        if cand[p] == 0:
                            return False
                changed = True
        for unit in units:
            seen_once = 0
            seen_twice = 0
            for i in unit:
                c = cand[i] if not grid[i] else 1 << (grid[i] - 1)
                seen_twice |= seen_once & c
                seen_once |= c
            if seen_once != full:
                return False
            hidden = seen_once & ~seen_twice
            for i in unit:
                if not grid[i] and cand[i] & hidden and cand[i] != cand[i] & hidden:
                    cand[i] &= hidden
                    if cand[i] & (cand[i] - 1):
                        return False  # two digits can only go in this one cell
                    changed = True
    return True


def _initial(spec: SudokuSpec, puzzle) -> tuple[list[int], list[int]] | None:
    peers, _, _ = _tables(spec)
    full = (1 << spec.n) - 1
    grid = [int(v) for v in puzzle]
    cand = [0 if v else full for v in grid]
    for i, v in enumerate(grid):
        if v:
            bit = 1 << (v - 1)
            for p in peers[i]:
                if grid[p] == v:
                    return None
                cand[p] &= ~bit
    return cand, grid


def _search(spec, cand, grid, limit, out) -> None:
    if not _propagate(spec, cand, grid):
        return
    best, best_count = -1, 99
    for i in range(spec.cells):
        if not grid[i]:
            k = cand[i].bit_count()
            if k < best_count:
                best, best_count = i, k
                if k == 2:
                    break
    if best < 0:
        out.append(grid[:])
        return
    c = cand[best]
    peers = _tables(spec)[0]
    while c and len(out) < limit:
        bit = c & -c
        c ^= bit
        g2, c2 = grid[:], cand[:]
        g2[best] = 0
        c2[best] = bit
        for p in peers[best]:
            if not g2[p]:
                c2[p] &= ~bit
        _search(spec, c2, g2, limit, out)


def solve(spec: SudokuSpec, puzzle, limit: int = 2) -> list[np.ndarray]:
    """Up to `limit` solutions of `puzzle` (tokens, 0 = blank). Empty list when unsolvable."""
    start = _initial(spec, puzzle)
    if start is None:
        return []
    out: list[list[int]] = []
    _search(spec, start[0], start[1], limit, out)
    return [np.array(g, dtype=np.int64) for g in out]


def count_solutions(spec: SudokuSpec, puzzle, limit: int = 2) -> int:
    return len(solve(spec, puzzle, limit))


def has_other_solution(spec: SudokuSpec, puzzle, cell: int, digit: int) -> bool:
    """Is there a solution of `puzzle` whose `cell` is not `digit`? (cheaper than counting to 2)."""
    start = _initial(spec, puzzle)
    if start is None:
        return False
    cand, grid = start
    cand[cell] &= ~(1 << (digit - 1))
    out: list[list[int]] = []
    _search(spec, cand, grid, 1, out)
    return bool(out)
