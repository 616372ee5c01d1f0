"""The addition task: layout, exact verifier, generator, loaders, `upo data make/check`, and the
MDM training hook that keeps the prompt unmasked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from upo.cli import main
from upo.errors import UpoError
from upo.models.registry import load_mdm
from upo.models.tiny import TinyConfig, TinyMDM
from upo.tasks.addition.layout import MASK, encode, exact_sum, render
from upo.tasks.registry import get_task
from upo.training.mdm import MDMTrainConfig, answer_positions, draw_mask, train_mdm

TASK = get_task("addition")
SPEC = TASK.spec
D = SPEC.digits
numbers = st.integers(min_value=0, max_value=10**D - 1)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("upo: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- layout and verifier ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(numbers, numbers)
def test_column_addition_is_exact(a, b):
    tokens = encode(SPEC, a, b)
    assert render(SPEC, tokens) == f"{a:0{D}d}+{b:0{D}d}={a + b:0{D + 1}d}"
    assert int("".join(map(str, exact_sum(SPEC, tokens[None])[0]))) == a + b


@settings(max_examples=100, deadline=None)
@given(numbers, numbers, st.integers(0, D), st.integers(1, 9))
def test_verifier_accepts_the_sum_and_rejects_any_wrong_digit(a, b, where, shift):
    full = encode(SPEC, a, b)[None]
    prompt = encode(SPEC, a, b, with_answer=False)[None]
    batch = TASK.batch_from_digits(prompt[:, :D], prompt[:, D + 1 : 2 * D + 1])
    assert (batch.tokens == prompt).all() and (batch.answers == full).all()
    assert TASK.solved(batch, full)[0] == 1.0 and TASK.partial_credit(batch, full)[0] == 1.0
    wrong = full.copy()
    pos = SPEC.answer_start + where
    wrong[0, pos] = (wrong[0, pos] + shift) % 10
    assert TASK.solved(batch, wrong)[0] == 0.0
    assert TASK.partial_credit(batch, wrong)[0] == pytest.approx(D / (D + 1))


def test_only_the_answer_is_masked_and_difficulty_counts_digits():
    prompt = encode(SPEC, 905, 17, with_answer=False)
    assert (prompt[SPEC.answer_positions] == MASK).all()
    assert (prompt[~SPEC.answer_positions] != MASK).all()
    batch = TASK.batch_from_digits(prompt[None, :D], prompt[None, D + 1 : 2 * D + 1])
    assert TASK.difficulty(batch).tolist() == [3] and batch.meta == [{"digits": 3}]
    zero = encode(SPEC, 0, 0, with_answer=False)[None]
    assert TASK.difficulty(TASK.batch_from_digits(zero[:, :D], zero[:, D + 1 : 2 * D + 1])) == 1


def test_place_ids_align_the_columns():
    place = np.array(SPEC.place)
    for k in range(D):
        cols = np.flatnonzero(place == k)
        assert len(cols) == 3  # a, b and the answer digit of that place value
    assert place[SPEC.answer_start] == D  # the final carry


# --- generator and stream -----------------------------------------------------------------------


def test_stream_is_deterministic_valid_and_covers_every_length():
    stream = TASK.stream(3)
    x = stream.batch(5, 512)
    assert np.array_equal(x, TASK.stream(3).batch(5, 512))
    assert not np.array_equal(x, stream.batch(6, 512))
    assert x.shape == (512, SPEC.seq_len) and (x != MASK).all()
    assert (x[:, SPEC.answer_start :] == exact_sum(SPEC, x)).all()
    n = TASK.difficulty(TASK.batch_from_digits(x[:, :D], x[:, D + 1 : 2 * D + 1]))
    assert set(n.tolist()) == set(range(1, D + 1))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, D), st.integers(0, 3), st.integers(0, 10_000))
def test_generate_gives_distinct_items_in_range(lo, width, seed):
    hi = min(D, lo + width)
    batch = TASK.generate(30 if lo > 1 else 10, (lo, hi), seed)
    keys = TASK.keys(batch)
    assert len(set(keys)) == len(keys)
    assert ((TASK.difficulty(batch) >= lo) & (TASK.difficulty(batch) <= hi)).all()
    assert TASK.solved(batch, batch.answers).all()


def test_exhausted_space_is_a_clear_error():
    with pytest.raises(UpoError, match="found only 100 distinct additions"):
        TASK.generate(101, (1, 1), seed=0, max_attempts=2000)  # 10 x 10 one-digit sums exist


# --- files --------------------------------------------------------------------------------------


def test_write_load_round_trip(tmp_path):
    batch = TASK.generate(50, (1, D), seed=7)
    path = tmp_path / "a.jsonl"
    TASK.write(path, batch)
    again = TASK.load(path)
    assert np.array_equal(again.tokens, batch.tokens) and np.array_equal(
        again.answers, batch.answers
    )
    row = json.loads(path.read_text().splitlines()[0])
    assert int(row["a"]) + int(row["b"]) == int(row["answer"]) and row["task"] == "addition"


def test_plain_text_lines(tmp_path):
    path = tmp_path / "sums.txt"
    path.write_text("12+30\n\n 7 + 5 = 12\n0+0=0\n")
    batch = TASK.load(path)
    assert [render(SPEC, t)[-3:] for t in batch.answers] == ["042", "012", "000"]


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"a": "12", "b": "3x"}', "b '3x' has a non-digit character 'x'"),
        ('{"a": "12"}', "missing key 'b'"),
        ('{"a": 12, "b": "3"}', "'a' must be a string, got int"),
        ('{"a": "12", "b": "3", "answer": "16"}', "answer 16 is wrong: 12+3 = 15"),
        ('{"a": "1", "b": "2"', "malformed JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ("1" * (D + 1) + "+1", f"a has {D + 1} digits, this task allows at most {D}"),
        ("12-3", "expected 'a+b' or 'a+b=c'"),
        ("+3", "a is empty"),
        ("1+²", "non-digit character '²'"),
    ],
)
def test_bad_lines_name_the_line_and_why(tmp_path, line, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": "1", "b": "2"}\n\n' + line + "\n")
    with pytest.raises(UpoError) as err:
        TASK.load(path)
    assert str(err.value).startswith(f"{path}: line 3: ") and reason in str(err.value)
    batch, errors = TASK.check(path, skip_invalid=True)
    assert len(batch) == 1 and len(errors) == 1


@pytest.mark.parametrize("content, reason", [("", "empty file"), ("\n \n", "empty file")])
def test_empty_files(tmp_path, content, reason):
    path = tmp_path / "e.jsonl"
    path.write_text(content)
    with pytest.raises(UpoError, match=reason):
        TASK.load(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UpoError, match="no such file"):
        TASK.load(tmp_path / "nope.jsonl")
    with pytest.raises(UpoError, match="is a directory"):
        TASK.load(tmp_path)


# --- CLI ----------------------------------------------------------------------------------------


def test_data_make_and_check(tmp_path, capsys):
    test, train = tmp_path / "test.jsonl", tmp_path / "train.jsonl"
    code, _, err = run(capsys, "data", "make", "addition", "--n", 40, "--seed", 1, "--out", test)
    assert code == 0 and "40 addition items, digits " in err
    args = ("data", "make", "addition", "--n", 40, "--seed", 1, "--difficulty", "2-3")
    assert run(capsys, *args, "--out", train, "--exclude", test)[0] == 0
    assert not set(TASK.keys(TASK.load(test))) & set(TASK.keys(TASK.load(train)))
    assert set(TASK.difficulty(TASK.load(train)).tolist()) <= {2, 3}
    code, out, _ = run(capsys, "data", "check", train)  # the task is read from the file
    assert (
        code == 0 and out.startswith(f"{train}: 40 valid items (digits 2-3") and "addition" in out
    )


def test_data_make_is_deterministic(tmp_path, capsys):
    paths = [tmp_path / f"{k}.jsonl" for k in "abc"]
    for path, seed in zip(paths, (4, 4, 5)):
        assert (
            run(capsys, "data", "make", "addition", "--n", 20, "--seed", seed, "--out", path)[0]
            == 0
        )
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()


@pytest.mark.parametrize("difficulty", ["0-3", "5-2", f"1-{D + 1}", "x"])
def test_data_make_bad_difficulty(tmp_path, capsys, difficulty):
    args = ("data", "make", "addition", "--n", 3, "--difficulty", difficulty)
    code, _, err = run(capsys, *args, "--out", tmp_path / "x.jsonl")
    assert code == 2
    one_error_line(err, f"--difficulty {difficulty!r}")


def test_data_check_names_the_bad_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": "5", "b": "5", "answer": "10"}\n{"a": "5", "b": "5", "answer": "11"}\n')
    code, _, err = run(capsys, "data", "check", path, "--task", "addition")
    assert code == 2
    one_error_line(err, f"{path}: line 2: answer 11 is wrong: 5+5 = 10")
    code, out, _ = run(capsys, "data", "check", path, "--task", "addition", "--skip-invalid")
    assert code == 0 and "1 valid items" in out and "1 invalid lines skipped, first: line 2" in out


def test_sudoku_file_checked_as_addition_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"puzzle": "0" * 16, "solution": "1" * 16}) + "\n")
    code, _, err = run(capsys, "data", "check", path, "--task", "addition")
    assert code == 2
    one_error_line(err, "line 1: missing key 'a'")


# --- MDM: the prompt is never masked, and a tiny run trains and evaluates ------------------------


def test_training_masks_only_answer_positions():
    cfg = MDMTrainConfig(task="addition", t_min=0.0, t_max=1.0)
    maskable = answer_positions(TASK)
    tokens = torch.from_numpy(TASK.stream(0).batch(0, 256))
    gen = torch.Generator().manual_seed(0)
    _, mask = draw_mask(tokens, cfg, gen, maskable)
    assert mask.any(1).all()  # every sequence contributes to the loss
    assert not mask[:, ~maskable].any()
    assert mask[:, maskable].float().mean() > 0.3


def test_position_groups_add_an_embedding_per_group():
    cfg = TinyConfig(**TASK.model_defaults(), d_model=16, n_layers=2, n_heads=2, bf16=False)
    model = TinyMDM(cfg)
    assert model.groups[0].num_embeddings == D + 3
    logits, _ = model(torch.from_numpy(TASK.stream(0).batch(0, 2)))
    assert logits.shape == (2, SPEC.seq_len, 13)
    with pytest.raises(ValueError, match="position_groups"):
        TinyConfig(**{**TASK.model_defaults(), "position_groups": [[0, 1]]}).validate()


@pytest.mark.numerics
def test_tiny_training_run_then_eval(tmp_path, capsys):
    cfg = MDMTrainConfig(
        task="addition",
        model={"d_model": 32, "n_layers": 2, "n_heads": 2, "ff_mult": 2, "bf16": False},
        steps=30,
        batch_size=32,
        warmup_steps=5,
        threads=1,
        log_every=10,
        eval_every=30,
        checkpoint_every=10,
        val_size=64,
        val_puzzles=10,
        val_blanks=[3],
    )
    meta = train_mdm(cfg, tmp_path / "mdm")
    assert meta["complete"] and "val_solve@3" in meta["validation"]
    mdm = load_mdm(tmp_path / "mdm")
    assert mdm.cfg.position_groups == [SPEC.place]
    data = tmp_path / "test.jsonl"
    TASK.write(data, TASK.generate(12, (1, 4), seed=3))
    out = tmp_path / "eval.json"
    args = ("eval", "--task", "addition", "--mdm", tmp_path / "mdm", "--data", data)
    code, stdout, _ = run(
        capsys, *args, "--policies", "confidence,left-to-right", "--json", out, "--show-order"
    )
    assert code == 0 and "solve rate by number of digits" in stdout
    result = json.loads(out.read_text())
    assert result["task"] == "addition" and result["n"] == 12
    assert all("solve_rate_by_digits" in r for r in result["results"])
    # left-to-right reveals the answer in written order: steps 0..D
    assert f"under left-to-right:\n{' '.join(str(s) for s in range(D + 1))}" in stdout
