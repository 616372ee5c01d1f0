"""The sums task (two valid phrasings of different lengths): layout, verifier of both forms,
training stream mixture, generator, files, and `upo data make/check`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upo.cli import main
from upo.tasks.registry import get_task
from upo.tasks.sums.layout import COMMA, END, MASK, SumsSpec, answer_forms, encode, render

TASK = get_task("sums")
SPEC = TASK.spec
K, D, W = SPEC.terms, SPEC.digits, SPEC.width
numbers = st.lists(st.integers(0, 10**D - 1), min_size=K, max_size=K)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_layout_lengths_and_tokens():
    assert SPEC.seq_len == len(SPEC.place) == SPEC.answer_start + SPEC.answer_length
    row = encode(SPEC, [12, 45, 6, 0, 99])
    assert render(SPEC, row) == "12+45+06+00+99=057,063,063,162"
    short = encode(SPEC, [12, 45, 6, 0, 99], "short")
    assert render(SPEC, short) == "12+45+06+00+99=162" + "." * (SPEC.answer_length - W)
    assert (encode(SPEC, [1] * K, "masked")[SPEC.answer_start :] == MASK).all()


@settings(max_examples=100, deadline=None)
@given(numbers)
def test_both_phrasings_are_solved_and_a_wrong_total_is_not(ns):
    batch = TASK.batch_from_numbers(np.array([ns]))
    worked, short = encode(SPEC, ns, "worked")[None], encode(SPEC, ns, "short")[None]
    assert (batch.answers == worked).all()
    for out, form in ((worked, "worked"), (short, "short")):
        assert TASK.solved(batch, out)[0] == 1.0 and TASK.partial_credit(batch, out)[0] == 1.0
        assert answer_forms(SPEC, out) == [form]
        wrong = out.copy()
        last_digit = SPEC.answer_start + int(np.flatnonzero(out[0, SPEC.answer_start :] < 10)[-1])
        wrong[0, last_digit] = (wrong[0, last_digit] + 1) % 10
        assert TASK.solved(batch, wrong)[0] == 0.0
        assert TASK.partial_credit(batch, wrong)[0] == pytest.approx((W - 1) / W)


def test_malformed_answers_are_not_solved():
    ns = [12, 45, 6, 0, 99]
    batch = TASK.batch_from_numbers(np.array([ns]))
    start = SPEC.answer_start
    cases = []
    gap = encode(SPEC, ns, "short")[None]
    gap[0, -1] = 2  # a digit after END
    cases.append(gap)
    two = encode(SPEC, ns, "worked")[None]
    two[0, start + 2 * W + 1 :] = END  # two totals: neither phrasing
    cases.append(two)
    narrow = encode(SPEC, ns, "short")[None]
    narrow[0, start + W - 1] = END  # a total one digit short
    cases.append(narrow)
    comma = encode(SPEC, ns, "worked")[None]
    comma[0, start] = COMMA
    cases.append(comma)
    for out in cases:
        assert TASK.solved(batch, out)[0] == 0.0 and TASK.partial_credit(batch, out)[0] == 0.0
        assert answer_forms(SPEC, out) == ["malformed"]


def test_training_stream_mixes_the_phrasings_at_the_short_rate_and_is_deterministic():
    rows = TASK.stream(3).batch(0, 2000)
    assert (rows == TASK.stream(3).batch(0, 2000)).all()
    forms = answer_forms(SPEC, rows)
    assert set(forms) == {"short", "worked"}
    assert abs(forms.count("short") / len(forms) - SPEC.short_rate) < 0.05
    from upo.tasks.sums.layout import numbers_of

    batch = TASK.batch_from_numbers(numbers_of(SPEC, rows))
    assert TASK.solved(batch, rows).all()  # every training item is a right answer


def test_spec_refuses_what_it_cannot_lay_out():
    with pytest.raises(ValueError, match="terms"):
        SumsSpec(11, 3)
    with pytest.raises(ValueError, match="short_rate"):
        SumsSpec(5, 3, short_rate=1.5)


def test_generate_is_distinct_respects_digits_and_exclusion():
    batch = TASK.generate(200, (2, 2), seed=0)
    keys = TASK.keys(batch)
    assert len(set(keys)) == 200 and (TASK.difficulty(batch) == 2).all()
    again = TASK.generate(50, (2, 2), seed=0, exclude=set(keys))
    assert not set(TASK.keys(again)) & set(keys)


def test_data_make_check_round_trip(tmp_path, capsys):
    out = tmp_path / "sums.jsonl"
    code, _, err = run(capsys, "data", "make", "sums", "--n", 20, "--out", out)
    assert code == 0, err
    row = json.loads(out.read_text().splitlines()[0])
    assert len(row["numbers"]) == K and int(row["answer"]) == sum(map(int, row["numbers"]))
    code, out_text, err = run(capsys, "data", "check", "--task", "sums", out)
    assert code == 0 and "20" in out_text, err
    assert TASK.keys(TASK.load(out)) == TASK.keys(TASK.load(out))


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("1+2+3+4", "expected 5 numbers"),
        ("1+2+3+4+5=16", "answer 16 is wrong"),
        ("1+2+3+4+123", "more than 2 digits"),
        ("1+2+3+4+x", "non-digit"),
        ('{"numbers": [1, 2, 3, 4, 5]}', "list of digit strings"),
    ],
)
def test_bad_lines_are_one_clear_error(tmp_path, capsys, line, fragment):
    path = tmp_path / "bad.txt"
    path.write_text("1+2+3+4+5=15\n" + line + "\n")
    code, _, err = run(capsys, "data", "check", "--task", "sums", path)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and fragment in lines[0] and "line 2" in lines[0], err
