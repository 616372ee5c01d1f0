"""Sudoku grids, solver and generator: the ground truth every reward and data file rests on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upo.errors import UpoError
from upo.tasks.sudoku.generate import (
    GridStream,
    base_grid,
    base_pool,
    generate_puzzles,
    make_puzzle,
    sample_grids,
    transform_grids,
)
from upo.tasks.sudoku.grid import (
    MASK,
    SPECS,
    cell_acc_batch,
    conflicts,
    decode,
    encode,
    is_valid_solution,
    parse_chars,
    render,
    solved_batch,
    spec_for_length,
)
from upo.tasks.sudoku.solver import count_solutions, has_other_solution, solve

FAST = settings(max_examples=10, deadline=None)
NAMES = sorted(SPECS)
# Blank ranges that each size reaches quickly with random removal.
BLANKS = {"sudoku4": (4, 11), "sudoku6": (12, 22), "sudoku9": (40, 55)}


def all_valid(spec, grids) -> bool:
    return all(is_valid_solution(spec, g) for g in grids)


# --- geometry and encoding ------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_spec_geometry(name):
    spec = SPECS[name]
    assert spec.units.shape == (3 * spec.n, spec.n)
    # Every cell is in exactly one row, one column and one box.
    assert (np.bincount(spec.units.reshape(-1), minlength=spec.cells) == 3).all()
    # Peers: n-1 in the row, n-1 in the column, plus box cells outside both.
    expected = 2 * (spec.n - 1) + (spec.box_rows - 1) * (spec.box_cols - 1)
    assert all(len(p) == expected for p in spec.peers)
    assert spec_for_length(spec.cells) == spec
    assert spec.vocab_size == spec.n + 1


def test_spec_for_length_rejects_other_sizes():
    with pytest.raises(ValueError, match="17 cells"):
        spec_for_length(17)


@FAST
@given(st.sampled_from(NAMES), st.data())
def test_encode_decode_round_trip(name, data):
    spec = SPECS[name]
    tokens = data.draw(st.lists(st.integers(0, spec.n), min_size=spec.cells, max_size=spec.cells))
    text = decode(tokens)
    assert len(text) == spec.cells
    assert encode(text).tolist() == tokens
    assert encode(text).dtype == np.int64
    # '.' is the other blank spelling.
    assert encode(text.replace("0", ".")).tolist() == tokens


def test_parse_chars_errors():
    spec = SPECS["sudoku4"]
    assert parse_chars("1.34" + "0" * 12, spec, "puzzle", allow_blank=True)[1] == MASK
    with pytest.raises(ValueError, match="15 characters, expected 16"):
        parse_chars("0" * 15, spec, "puzzle", allow_blank=True)
    with pytest.raises(ValueError, match="illegal character '5' at position 2"):
        parse_chars("125" + "0" * 13, spec, "puzzle", allow_blank=True)
    with pytest.raises(ValueError, match="illegal character '0'"):
        parse_chars("0" * 16, spec, "solution", allow_blank=False)


# --- complete grids -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_base_grid_and_pool_are_valid(name):
    spec = SPECS[name]
    assert is_valid_solution(spec, base_grid(spec))
    pool = base_pool(spec, 4, np.random.default_rng(0))
    assert pool.shape == (4, spec.cells) and all_valid(spec, pool)


@FAST
@given(st.sampled_from(NAMES), st.integers(0, 2**32 - 1))
def test_transform_grids_keep_validity(name, seed):
    spec = SPECS[name]
    rng = np.random.default_rng(seed)
    pool = base_pool(spec, 3, rng)
    grids = transform_grids(spec, pool[rng.integers(0, 3, size=16)], rng)
    assert grids.shape == (16, spec.cells) and grids.dtype == np.int64
    assert all_valid(spec, grids)


@FAST
@given(st.sampled_from(NAMES), st.integers(0, 2**32 - 1))
def test_sample_grids_valid_and_varied(name, seed):
    spec = SPECS[name]
    grids = sample_grids(spec, 32, np.random.default_rng(seed))
    assert all_valid(spec, grids)
    assert len({decode(g) for g in grids}) > 1  # the symmetries do vary the grid


@settings(max_examples=5, deadline=None)
@given(st.sampled_from(NAMES), st.integers(0, 1000), st.integers(0, 1000))
def test_grid_stream_deterministic_and_valid(name, seed, index):
    spec = SPECS[name]
    a = GridStream(spec, seed, pool_size=4)
    b = GridStream(spec, seed, pool_size=4)
    batch = a.batch(index, 8)
    assert np.array_equal(batch, b.batch(index, 8))  # resuming at `index` gives the same data
    assert not np.array_equal(batch, a.batch(index + 1, 8))
    assert all_valid(spec, batch)


# --- solver ---------------------------------------------------------------------------------


def test_solver_counts():
    spec = SPECS["sudoku4"]
    empty = np.zeros(spec.cells, dtype=np.int64)
    assert count_solutions(spec, empty, limit=2) == 2
    assert count_solutions(spec, empty, limit=1000) == 288  # the known number of 4x4 grids
    # Row 1 leaves only 4 for its last cell, but row 3 already has 4 in that column.
    dead = encode("1230000000040000")
    assert conflicts(spec, dead) == []
    assert solve(spec, dead) == []
    clash = encode("1100" + "0" * 12)
    assert solve(spec, clash) == []


@pytest.mark.parametrize("name", NAMES)
def test_solver_completes_a_full_grid_minus_one(name):
    spec = SPECS[name]
    grid = base_grid(spec)
    puzzle = grid.copy()
    puzzle[5] = MASK
    (found,) = solve(spec, puzzle)
    assert np.array_equal(found, grid)
    assert not has_other_solution(spec, puzzle, 5, int(grid[5]))


def test_has_other_solution():
    spec = SPECS["sudoku4"]
    empty = np.zeros(spec.cells, dtype=np.int64)
    assert has_other_solution(spec, empty, 0, 1)


# --- generator ------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(NAMES), st.integers(0, 2**31 - 1))
def test_generated_puzzles_are_unique_and_match_solver(name, seed):
    spec = SPECS[name]
    lo, hi = BLANKS[name]
    pairs = list(generate_puzzles(spec, 4, (lo, hi), seed))
    assert len(pairs) == 4
    assert len({decode(p) for p, _ in pairs}) == 4
    for puzzle, solution in pairs:
        assert lo <= int((puzzle == MASK).sum()) <= hi
        assert is_valid_solution(spec, solution)
        given = puzzle != MASK
        assert np.array_equal(puzzle[given], solution[given])
        found = solve(spec, puzzle, limit=2)
        assert len(found) == 1  # exactly one solution...
        assert np.array_equal(found[0], solution)  # ...and it is the generator's


def test_make_puzzle_exact_blanks_or_none():
    spec = SPECS["sudoku9"]
    rng = np.random.default_rng(3)
    solution = base_grid(spec)
    puzzle = make_puzzle(spec, solution, 30, rng)
    assert int((puzzle == MASK).sum()) == 30 and count_solutions(spec, puzzle) == 1
    # 80 blanks would need a one-clue puzzle: impossible, so the grid runs out of removals.
    assert make_puzzle(spec, solution, 80, rng) is None


def test_generate_deterministic_for_seed():
    spec = SPECS["sudoku6"]
    a = [decode(p) for p, _ in generate_puzzles(spec, 6, (15, 20), seed=7)]
    b = [decode(p) for p, _ in generate_puzzles(spec, 6, (15, 20), seed=7)]
    c = [decode(p) for p, _ in generate_puzzles(spec, 6, (15, 20), seed=8)]
    assert a == b and a != c


def test_generate_respects_exclude_and_reports_progress():
    spec = SPECS["sudoku4"]
    first = {decode(p) for p, _ in generate_puzzles(spec, 40, (6, 10), seed=1)}
    ticks = []
    second = [
        decode(p)
        for p, _ in generate_puzzles(
            spec, 40, (6, 10), seed=1, exclude=first, progress=ticks.append
        )
    ]
    assert not first & set(second)
    assert ticks == [1] * 40


def test_generate_gives_up_when_puzzles_run_out():
    # One blank: at most 288 grids x 16 cells = 4,608 distinct 4x4 puzzles, so 10,000 cannot exist.
    spec = SPECS["sudoku4"]
    with pytest.raises(UpoError, match=r"found only \d+ distinct sudoku4 puzzles") as err:
        for _ in generate_puzzles(spec, 10_000, (1, 1), seed=0, max_attempts=20):
            pass
    assert "\n" not in str(err.value)
    found = int(str(err.value).split("found only ")[1].split()[0])
    assert 1000 < found <= 4608


def test_generate_rejects_impossible_range():
    with pytest.raises(ValueError, match="impossible"):
        next(generate_puzzles(SPECS["sudoku4"], 1, (5, 16), seed=0))


# --- rewards and rendering ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair9():
    ((puzzle, solution),) = generate_puzzles(SPECS["sudoku9"], 1, (45, 45), seed=11)
    return puzzle, solution


def test_solved_batch_hand_cases(pair9):
    spec = SPECS["sudoku9"]
    puzzle, solution = pair9
    relabel = np.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9])  # swap digits 1 and 2
    other_valid = relabel[solution]
    assert is_valid_solution(spec, other_valid)
    swapped = solution.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # same digits in row 1, but columns now repeat
    unfinished = solution.copy()
    unfinished[puzzle == MASK] = MASK
    grids = np.stack([solution, other_valid, swapped, unfinished])
    puzzles = np.stack([puzzle] * 4)
    # A valid grid that changes a given earns nothing; so do invalid and unfinished grids.
    assert solved_batch(spec, puzzles, grids).tolist() == [1.0, 0.0, 0.0, 0.0]
    # Against an empty puzzle any valid grid counts.
    empty = np.zeros_like(puzzles)
    assert solved_batch(spec, empty, grids).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_cell_acc_batch_hand_cases():
    puzzle = encode("1200000000000000")  # 14 blanks
    solution = encode("1234341221434321")
    wrong3 = solution.copy()
    wrong3[[2, 5, 9]] = 9  # three blank cells wrong
    changed_given = solution.copy()
    changed_given[0] = 4  # givens do not count either way
    acc = cell_acc_batch(
        np.stack([puzzle] * 4),
        np.stack([solution, wrong3, changed_given, np.zeros(16, dtype=np.int64)]),
        np.stack([solution] * 4),
    )
    assert acc.tolist() == pytest.approx([1.0, 11 / 14, 1.0, 0.0])


def test_cell_acc_of_a_puzzle_without_blanks_is_one():
    solution = encode("1234341221434321")
    acc = cell_acc_batch(solution[None], solution[None], solution[None])
    assert acc.tolist() == [1.0]


def test_conflicts_names_unit_and_digit():
    spec = SPECS["sudoku4"]
    assert conflicts(spec, encode("1001" + "0" * 12)) == [("row", 0, 1)]
    assert conflicts(spec, encode("0200000000000200")) == [("column", 1, 2)]
    assert conflicts(spec, encode("30000300" + "0" * 8)) == [("box", 0, 3)]


def test_render_4x4():
    spec = SPECS["sudoku4"]
    text = render(spec, encode("1200000000000004"))
    assert text == "\n".join(
        [" 1 2 | . . ", " . . | . . ", "-----+-----", " . . | . . ", " . . | . 4 "]
    )
    assert render(spec, encode("1" + "0" * 15), blank="_").splitlines()[0] == " 1 _ | _ _ "


def test_render_6x6_shape():
    spec = SPECS["sudoku6"]
    lines = render(spec, base_grid(spec)).splitlines()
    # 6 rows plus a separator after every 2-row band except the last.
    assert len(lines) == 8 and lines[2].startswith("-")
    assert all(line.count("|") == 1 for i, line in enumerate(lines) if i not in (2, 5))
