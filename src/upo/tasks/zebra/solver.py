"""Exact Zebra solver: bitmask domains, constraint propagation, and depth-first search.

dom[a][v] is a bitmask of the houses where value v of attribute a can still be. Propagation
applies every clue to the domains and the all-different rule of each attribute (a placed value
leaves its house to nobody else; a house only one value can take gets that value) until nothing
changes; search then tries each house of the smallest open domain. A full assignment is checked
against every clue before it counts, so the solver is exact, not just as strong as its propagation.
Counting stops at `limit` solutions: limit=2 proves uniqueness.
"""

from __future__ import annotations

import numpy as np

from .spec import AT, LEFT, NOT_AT, SAME, ZebraSpec, clue_holds, house_of


class _Contradiction(Exception):
    pass


def _low_bits_below_top(mask: int) -> int:
    """Houses strictly left of the rightmost possible house of `mask`."""
    return (1 << (mask.bit_length() - 1)) - 1 if mask else 0


def _high_bits_above_bottom(mask: int, full: int) -> int:
    """Houses strictly right of the leftmost possible house of `mask`."""
    if not mask:
        return 0
    low = mask & -mask
    return full & ~((low << 1) - 1)


def _propagate(dom: list[list[int]], clues: list[tuple], n: int) -> None:
    full = (1 << n) - 1
    changed = True
    while changed:
        changed = False
        for kind, a1, v1, x, y in clues:
            d1 = dom[a1][v1]
            if kind == AT:
                new1, new2 = d1 & (1 << x), None
            elif kind == NOT_AT:
                new1, new2 = d1 & ~(1 << x), None
            else:
                d2 = dom[x][y]
                if kind == SAME:
                    new1 = new2 = d1 & d2
                elif kind == LEFT:
                    new1 = d1 & _low_bits_below_top(d2)
                    new2 = d2 & _high_bits_above_bottom(d1, full)
                else:  # NEXT
                    new1 = d1 & ((d2 << 1) | (d2 >> 1)) & full
                    new2 = d2 & ((d1 << 1) | (d1 >> 1)) & full
                if new2 != d2:
                    if not new2:
                        raise _Contradiction
                    dom[x][y] = new2
                    changed = True
            if new1 != d1:
                if not new1:
                    raise _Contradiction
                dom[a1][v1] = new1
                changed = True
        for row in dom:
            for v, d in enumerate(row):
                if d & (d - 1) == 0:  # placed: nobody else may have this house
                    for w in range(n):
                        if w != v and row[w] & d:
                            row[w] &= ~d
                            if not row[w]:
                                raise _Contradiction
                            changed = True
            for h in range(n):
                bit = 1 << h
                takers = [v for v in range(n) if row[v] & bit]
                if not takers:
                    raise _Contradiction
                if len(takers) == 1 and row[takers[0]] != bit:
                    row[takers[0]] = bit
                    changed = True


def _search(dom, clues, n, limit, found: list, stats: dict) -> None:
    try:
        _propagate(dom, clues, n)
    except _Contradiction:
        return
    stats["nodes"] = stats.get("nodes", 0) + 1
    best, best_count = None, n + 1
    for a, row in enumerate(dom):
        for v, d in enumerate(row):
            c = d.bit_count()
            if 1 < c < best_count:
                best, best_count = (a, v), c
    if best is None:
        grid = np.zeros((n, len(dom)), dtype=np.int64)
        for a, row in enumerate(dom):
            for v, d in enumerate(row):
                grid[d.bit_length() - 1, a] = v
        if not clues or clue_holds(np.array(clues), house_of(grid[None]))[0].all():
            found.append(grid)
        return
    a, v = best
    d = dom[a][v]
    while d and len(found) < limit:
        bit = d & -d
        d ^= bit
        child = [list(row) for row in dom]
        child[a][v] = bit
        _search(child, clues, n, limit, found, stats)


def solve(
    spec: ZebraSpec, clues: np.ndarray, limit: int = 2, stats: dict | None = None
) -> list[np.ndarray]:
    """Up to `limit` solutions ([N, M] grids) of a clue set; [] when it has none."""
    n, m = spec.houses, spec.attributes
    dom = [[(1 << n) - 1] * n for _ in range(m)]
    found: list[np.ndarray] = []
    rows = [tuple(int(t) for t in c) for c in np.asarray(clues).reshape(-1, 5)]
    _search(dom, rows, n, limit, found, stats if stats is not None else {})
    return found


def is_unique(spec: ZebraSpec, clues: np.ndarray) -> bool:
    return len(solve(spec, clues, limit=2)) == 1
