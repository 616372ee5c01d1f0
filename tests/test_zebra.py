"""Zebra puzzles: the exact solver (against brute force), the generator's guarantees, the stream's
solution-preserving disguises, the verifier, files and `upo data make/check`."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upo.cli import main
from upo.errors import UpoError
from upo.tasks.registry import get_task
from upo.tasks.zebra.generate import ZebraStream, make_puzzle
from upo.tasks.zebra.solver import is_unique, solve
from upo.tasks.zebra.spec import (
    NEXT,
    ZebraSpec,
    clue_holds,
    decode_clues,
    encode_clues,
    house_of,
    solved_batch,
)
from upo.training.mdm import answer_positions

TASK = get_task("zebra4")
SPEC = TASK.spec


def all_grids(n: int, m: int) -> np.ndarray:
    perms = list(itertools.permutations(range(n)))
    return np.array([np.array(p).T for p in itertools.product(perms, repeat=m)])


SMALL = {(n, m): all_grids(n, m) for n, m in [(3, 2), (3, 3), (4, 2)]}


def clue_strategy(n: int, m: int):
    relation = st.tuples(
        st.integers(0, NEXT), st.integers(0, m - 1), st.integers(0, n - 1),
        st.integers(0, m - 1), st.integers(0, n - 1),
    )  # fmt: skip
    unary = st.tuples(
        st.integers(3, 4), st.integers(0, m - 1), st.integers(0, n - 1),
        st.integers(0, n - 1), st.just(-1),
    )  # fmt: skip
    return st.lists(st.one_of(relation, unary), min_size=1, max_size=6)


@pytest.mark.parametrize("size", sorted(SMALL))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_solver_finds_exactly_the_brute_force_solutions(size, data):
    n, m = size
    clues = np.array(data.draw(clue_strategy(n, m)))
    grids = SMALL[size]
    expected = grids[clue_holds(clues, house_of(grids)).all(1)]
    found = solve(ZebraSpec(n, m, 10), clues, limit=10**6)
    assert sorted(g.tobytes() for g in found) == sorted(g.tobytes() for g in expected)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10**6))
def test_generated_puzzles_are_unique_minimal_and_true(seed):
    rng = np.random.default_rng(seed)
    made = make_puzzle(SPEC, rng)
    if made is None:
        return
    clues, grid = made
    assert len(clues) <= SPEC.max_clues
    assert clue_holds(clues, house_of(grid[None]))[0].all()
    found = solve(SPEC, clues)
    assert len(found) == 1 and np.array_equal(found[0], grid)
    for k in range(len(clues)):  # no clue is redundant on its own
        assert not is_unique(SPEC, np.delete(clues, k, axis=0))


def test_clue_encoding_round_trips():
    clues, _ = make_puzzle(SPEC, np.random.default_rng(3))
    tokens = encode_clues(SPEC, clues)
    assert tokens.shape == (SPEC.answer_start,)
    assert np.array_equal(decode_clues(SPEC, tokens), clues)
    assert (tokens[len(clues) * 5 :] == SPEC.pad).all()
    assert tokens.max() < SPEC.mask  # the mask token never appears in a prompt


def test_stream_disguises_keep_the_unique_solution():
    stream = ZebraStream(SPEC, seed=1, base=8)
    x = stream.batch(3, 64)
    assert np.array_equal(x, ZebraStream(SPEC, seed=1, base=8).batch(3, 64))  # resumable
    assert x.shape == (64, SPEC.seq_len) and (x != SPEC.mask).all()
    assert solved_batch(SPEC, x, x).all()
    for row in x[:16]:
        found = solve(SPEC, decode_clues(SPEC, row))
        assert len(found) == 1 and np.array_equal(found[0].reshape(-1), row[SPEC.answer_start :])
    # the disguises differ from the pool puzzles they came from
    assert len({r.tobytes() for r in x}) > 50


def test_verifier_accepts_the_solution_and_rejects_corruptions():
    batch = TASK.generate(10, (1, SPEC.max_clues), seed=2)
    assert TASK.solved(batch, batch.answers).all()
    assert (TASK.partial_credit(batch, batch.answers) == 1).all()
    rng = np.random.default_rng(0)
    for i in range(10):
        wrong = batch.answers[i : i + 1].copy()
        grid = wrong[0, SPEC.answer_start :].reshape(SPEC.houses, SPEC.attributes)
        a = rng.integers(SPEC.attributes)
        h1, h2 = rng.choice(SPEC.houses, 2, replace=False)
        grid[[h1, h2], a] = grid[[h2, h1], a]  # still a valid grid, but not the solution
        wrong[0, SPEC.answer_start :] = grid.reshape(-1)
        assert TASK.solved(batch.select([i]), wrong)[0] == 0.0
        wrong[0, SPEC.answer_start] = SPEC.pad  # not even a value
        assert TASK.solved(batch.select([i]), wrong)[0] == 0.0


def test_only_the_grid_is_maskable():
    where = answer_positions(TASK)
    assert where.sum() == 16 and where[-16:].all()
    groups = TASK.model_defaults()["position_groups"]
    assert len(groups) == 2 and all(len(g) == SPEC.seq_len for g in groups)


def test_token_slots_give_every_clue_token_its_whole_clue():
    """Changing one field of one clue changes the input of that clue's five positions only."""
    import torch

    from upo.models.tiny import TinyConfig, TinyMDM

    torch.manual_seed(0)
    model = TinyMDM(TinyConfig(**TASK.model_defaults(), d_model=32, n_layers=2, n_heads=2))
    batch = TASK.generate(2, (1, SPEC.max_clues), seed=5)
    tokens = torch.from_numpy(batch.tokens)
    changed = tokens.clone()
    changed[:, 2] = (changed[:, 2] + 1) % SPEC.houses  # clue 0, field 2: the value
    diff = (model.embed(changed) - model.embed(tokens)).abs().sum(-1) > 0  # [B, L]
    expect = torch.zeros(SPEC.seq_len, dtype=torch.bool)
    expect[:5] = True
    assert (diff == expect).all()
    # the same field value in another slot gives that slot the same sum
    slots = model.slot_sums(tokens)
    assert torch.allclose(slots[:, 0], slots[:, 4]) and not torch.allclose(slots[:, 0], slots[:, 5])
    with pytest.raises(ValueError, match="token_slots"):
        TinyConfig(**{**TASK.model_defaults(), "token_slots": [[0] * SPEC.seq_len]}).validate()


def test_write_load_round_trip_and_solution_is_optional(tmp_path):
    batch = TASK.generate(12, (1, SPEC.max_clues), seed=4)
    path = tmp_path / "z.jsonl"
    TASK.write(path, batch)
    again = TASK.load(path)
    assert np.array_equal(again.tokens, batch.tokens) and np.array_equal(
        again.answers, batch.answers
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        del row["solution"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert np.array_equal(TASK.load(path).answers, batch.answers)  # the solver fills it in


def _row(**change):
    row = {
        "task": "zebra4",
        "clues": [["at", 0, 0, 0], ["at", 0, 1, 1], ["at", 0, 2, 2]],
        "solution": [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]],
    }
    row.update(change)
    return json.dumps(row)


@pytest.mark.parametrize(
    "line, reason",
    [
        (_row(), "clues have more than one solution"),
        (_row(clues=[["beside", 0, 0, 1, 1]]), "clue 1 must be a list starting with one of same"),
        (_row(clues=[["same", 0, 0, 1]]), "clue 1 (same) needs 5 entries, got 4"),
        (_row(clues=[["at", 0, 7, 1]]), "clue 1: value 7 is out of range 0-3"),
        (_row(clues=[["at", 0, 0, "1"]]), "clue 1: house must be a whole number, got '1'"),
        (_row(clues=[["next", 0, 0, 0, 0]]), "clue 1 relates 0:0 to itself"),
        (_row(clues=[["at", 0, 0, 1]]), "solution breaks clue 1"),
        (_row(clues=[]), "'clues' must be a non-empty list"),
        (_row(clues=[["at", 0, 0, 0]] * 15), "15 clues, zebra4 fits at most 14"),
        (_row(solution=[[0, 0, 0, 0]] * 4), "solution repeats a value of attribute 0"),
        (_row(solution=[[0, 0, 0]] * 4), "solution must be 4 rows of 4 values"),
        ('{"solution": []}', "missing key 'clues'"),
        ('{"clues": [', "malformed JSON"),
    ],
)
def test_bad_lines_name_the_line_and_why(tmp_path, line, reason):
    good = TASK.generate(1, (1, SPEC.max_clues), seed=9)
    path = tmp_path / "bad.jsonl"
    TASK.write(path, good)
    path.write_text(path.read_text() + "\n" + line + "\n")
    with pytest.raises(UpoError) as err:
        TASK.check(path)
    assert str(err.value).startswith(f"{path}: line 3: ") and reason in str(err.value)
    batch, errors = TASK.check(path, skip_invalid=True)
    assert len(batch) == 1 and len(errors) == 1


def test_unsolvable_clues(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"clues": [["at", 0, 0, 0], ["at", 1, 0, 1], ["same", 0, 0, 1, 0]]}))
    with pytest.raises(UpoError, match="line 1: clues have no solution"):
        TASK.load(path)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_data_make_exclude_and_check(tmp_path, capsys):
    test, train = tmp_path / "test.jsonl", tmp_path / "train.jsonl"
    assert run(capsys, "data", "make", "zebra4", "--n", 15, "--seed", 1, "--out", test)[0] == 0
    args = ("data", "make", "zebra4", "--n", 15, "--seed", 1, "--difficulty", "10-11")
    code, _, err = run(capsys, *args, "--out", train, "--exclude", test)
    assert code == 0 and "15 zebra4 items, 4x4, clues 1" in err
    assert not set(TASK.keys(TASK.load(test))) & set(TASK.keys(TASK.load(train)))
    assert set(TASK.difficulty(TASK.load(train)).tolist()) <= {10, 11}
    code, out, _ = run(capsys, "data", "check", train)
    assert (
        code == 0 and out.startswith(f"{train}: 15 valid items (4x4, clues 1") and "zebra4" in out
    )


def test_data_check_bad_line_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(_row() + "\n")
    code, _, err = run(capsys, "data", "check", path, "--task", "zebra4")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0] == f"upo: error: {path}: line 1: clues have more than one solution"


def test_the_harder_5x5_setting():
    task = get_task("zebra5")
    batch = task.generate(3, (1, task.spec.max_clues), seed=0)
    assert batch.tokens.shape == (3, task.spec.seq_len)
    for clues, grid in task.items(batch):
        found = solve(task.spec, clues)
        assert len(found) == 1 and np.array_equal(found[0], grid)
    assert task.solved(batch, batch.answers).all()


def test_answer_cells_carry_the_tokens_that_name_them():
    import torch

    from upo.models.tiny import TinyConfig, TinyMDM

    cfg = TinyConfig(**TASK.model_defaults(), d_model=16, n_layers=2, n_heads=2, bf16=False)
    model = TinyMDM(cfg)
    tokens = torch.from_numpy(TASK.stream(0).__class__(SPEC, 0, base=2).batch(0, 1))
    before = model.embed(tokens)
    with torch.no_grad():
        model.tok.weight[SPEC.attr0 + 2] += 1.0  # attribute 2's token
    moved = (model.embed(tokens) - before).abs().sum(-1)[0]
    cells = SPEC.answer_start + np.arange(SPEC.cells)
    assert (moved[cells[2 :: SPEC.attributes]] > 0).all()  # the cells of attribute 2 ...
    assert (moved[cells[0 :: SPEC.attributes]] == 0).all()  # ... and not those of attribute 0
    prompt_attr2 = tokens[0, : SPEC.answer_start] == SPEC.attr0 + 2
    assert (moved[: SPEC.answer_start][~prompt_attr2] == 0).all()
