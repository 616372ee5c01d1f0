"""Text tasks: answer extraction and rewards on hand-written answers (malformed ones included),
data loading from the small fixtures in tests/fixtures/text, and the encode -> decode -> reward
path through a tokenizer."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from hf_standins import TinyLladaConfig, TinyLladaModel, make_tokenizer
from upo.errors import UpoError
from upo.models.hf import HFDenoiser
from upo.tasks.registry import get_task
from upo.tasks.text import countdown, mathcheck
from upo.tasks.text.data import read_records
from upo.tasks.text.extract import (
    answer_tag,
    digits,
    gsm8k_prediction,
    gsm8k_reference,
    last_boxed,
    parse_number,
)

FIXTURES = Path(__file__).parent / "fixtures" / "text"


@pytest.fixture(scope="module")
def mdm():
    return HFDenoiser(TinyLladaModel(TinyLladaConfig()), make_tokenizer())


# -- extraction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 + 4 = 7, so \\boxed{7}.", 7),
        ("The answer is $1,200.", 1200),
        ("work...\n#### 4.5", Fraction(9, 2)),
        ("<answer>-3</answer>", -3),
        ("<answer>7.0", 7),  # generation stopped before the closing tag
        ("He pays 5 then 12 dollars", 12),  # last number as the last resort
        ("\\boxed{\\frac{3}{4}}", Fraction(3, 4)),
        ("\\boxed{seven}", None),
        ("I do not know.", None),
        ("", None),
    ],
)
def test_gsm8k_prediction(text, expected):
    assert gsm8k_prediction(text) == expected


def test_gsm8k_reference_and_numbers():
    assert gsm8k_reference("so 3+4=7\n#### 7") == 7
    assert gsm8k_reference("#### 1,000") == 1000
    assert gsm8k_reference("no final answer") is None
    assert parse_number("$12.50") == Fraction(25, 2)
    assert parse_number("3/0") is None and parse_number("\\frac{1}{0}") is None
    assert parse_number("12 apples") is None


def test_boxed_and_tags():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\frac{1}{2}") is None  # unclosed
    assert last_boxed("no box") is None
    assert answer_tag("<answer>a</answer> <answer> b </answer>") == "b"
    assert digits("<answer>1 2 3 4\n3412 2143 4321</answer>", 16) == [
        int(c) for c in "1234341221434321"
    ]
    assert digits("12", 16) is None


# -- math equivalence ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gold, pred, same",
    [
        ("\\frac{3}{4}", "0.75", True),
        ("2\\sqrt{2}", "\\sqrt{8}", True),
        ("\\frac{3}{4}", "\\dfrac{3}{4}", True),
        ("3", "4", False),
        ("3", None, False),
        ("3", "", False),
        ("\\frac{3}{4}", "\\frac{3}{", False),  # malformed: wrong, never an exception
    ],
)
def test_math_equal(gold, pred, same):
    assert mathcheck.math_equal(gold, pred) is same


def test_math_equal_falls_back_without_math_verify(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # import fails
    monkeypatch.setattr(mathcheck, "_warned", False)
    assert mathcheck.math_equal("\\frac{3}{4}", "0.75")
    assert mathcheck.math_equal("\\dfrac{3}{4}", "\\frac{3}{4}")
    assert mathcheck.math_equal("10^\\circ", "10")
    assert not mathcheck.math_equal("2\\sqrt{2}", "3")
    mathcheck.math_equal("1", "1")
    err = capsys.readouterr().err
    assert err.count("math-verify is not installed") == 1


# -- countdown ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, nums, target, ok",
    [
        ("<answer>3 * 8 * 1</answer>", [3, 8, 1], 24, True),
        ("<answer>3 * 8 * 1 = 24</answer>", [3, 8, 1], 24, True),
        ("so the expression is\n(8 * 3) / 1", [3, 8, 1], 24, True),
        ("<answer>(7 - 3) * 5 / 2</answer>", [2, 5, 7, 3], 10, True),
        ("<answer>3 * 8</answer>", [3, 8, 1], 24, False),  # a number unused
        ("<answer>3 * 8 * 1 * 1</answer>", [3, 8, 1], 24, False),  # a number twice
        ("<answer>3 * 9 - 3</answer>", [3, 8, 1], 24, False),  # numbers not given
        ("<answer>3 + 8 + 1</answer>", [3, 8, 1], 24, False),  # misses the target
        ("<answer>8 / (1 - 1) * 3</answer>", [3, 8, 1], 24, False),  # division by zero
        ("<answer>(3 * 8 * 1</answer>", [3, 8, 1], 24, False),  # unbalanced
        ("<answer>3 ** 8 * 1</answer>", [3, 8, 1], 24, False),
        ("<answer>__import__('os').system('x')</answer>", [3, 8, 1], 24, False),
        ("<answer>" + "1+" * 200 + "1</answer>", [1], 1, False),  # too long
        ("I give up.", [3, 8, 1], 24, False),
    ],
)
def test_countdown_check(text, nums, target, ok):
    assert countdown.check(text, nums, target) is ok


def test_countdown_evaluates_exactly_without_eval():
    value, used = countdown.evaluate("(7 - 3) * 5 / 2")
    assert value == 10 and sorted(used) == [2, 3, 5, 7]
    assert countdown.evaluate("-3 + 4")[0] == 1
    assert countdown.evaluate("1 / 3 * 3")[0] == 1  # fractions, no float error
    with pytest.raises(countdown.BadExpression):
        countdown.evaluate("2 +")


# -- data ---------------------------------------------------------------------------------------


def test_read_records_from_jsonl_csv_and_json(tmp_path):
    assert len(read_records(FIXTURES / "gsm8k.jsonl", "gsm8k")) == 3
    assert read_records(FIXTURES / "sudoku4.csv", "sudoku4-text")[0]["Puzzle"] == "1030041020030301"
    rows = [{"target": 1, "nums": [1]}]
    (tmp_path / "c.json").write_text(json.dumps(rows))
    assert read_records(tmp_path / "c.json", "countdown") == rows


def test_missing_data_says_what_to_download(tmp_path):
    with pytest.raises(UpoError) as err:
        read_records(tmp_path / "gsm8k-test.jsonl", "gsm8k")
    msg = str(err.value)
    assert "openai/gsm8k" in msg and "gsm8k-test.jsonl" in msg and "\n" not in msg


def test_hf_dataset_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UpoError, match="datasets package is not installed.*HuggingFaceH4/MATH-500"):
        read_records("hf:HuggingFaceH4/MATH-500:test", "math500")


def test_bad_records_are_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    with pytest.raises(UpoError, match=r"bad.jsonl:2: not valid JSON"):
        read_records(bad, "gsm8k")
    bad.write_text('{"question": "q"}\n')
    task = get_task("gsm8k")
    with pytest.raises(UpoError, match="record 1 has none of the fields answer"):
        task.items(read_records(bad, "gsm8k"), bad)


def test_parquet(tmp_path):
    path = tmp_path / "c.parquet"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path.write_bytes(b"PAR1")
        with pytest.raises(UpoError, match="needs pyarrow"):
            read_records(path, "countdown")
        return
    pq.write_table(pa.Table.from_pylist([{"target": 3, "nums": [1, 2]}]), path)
    assert read_records(path, "countdown") == [{"target": 3, "nums": [1, 2]}]


# -- tasks end to end ---------------------------------------------------------------------------


def answer_outputs(task, batch, texts):
    """Outputs as the MDM would leave them: each answer's tokens, then EOS, then junk."""
    tok = task.tokenizer
    out = batch.tokens.copy()
    for row, text in enumerate(texts):
        ids = tok(text, add_special_tokens=False)["input_ids"] + [3]  # <|eot_id|>
        ids += tok("9999", add_special_tokens=False)["input_ids"] * task.gen_length
        out[row, -task.gen_length :] = ids[: task.gen_length]
    return out


def test_gsm8k_rewards_through_the_tokenizer(mdm):
    task = get_task("gsm8k", {"gen_length": 32, "block_length": 8}).bind(mdm)
    batch = task.load(FIXTURES / "gsm8k.jsonl")
    assert len(batch) == 3 and (batch.tokens[:, -32:] == mdm.mask_id).all()
    assert (batch.attention_mask[:, -1]).all() and not batch.attention_mask[:, 0].all()
    outputs = answer_outputs(task, batch, ["so \\boxed{7}", "#### 1200", "it is 4"])
    assert task.solved(batch, outputs).tolist() == [True, True, False]
    assert task.partial_credit(batch, outputs).tolist() == [1.0, 1.0, 0.0]
    assert task.answers(batch, outputs)[0] == "so \\boxed{7}"  # EOS ends the answer


def test_math500_rewards(mdm):
    task = get_task("math500", {"gen_length": 24, "block_length": None}).bind(mdm)
    batch = task.load(FIXTURES / "math500.jsonl")
    assert [m["reference"] for m in batch.meta] == ["\\frac{3}{4}", "2\\sqrt{2}", "3"]
    outputs = answer_outputs(task, batch, ["\\boxed{0.75}", "\\boxed{\\sqrt{8}}", "\\boxed{-3}"])
    assert task.solved(batch, outputs).tolist() == [True, True, False]
    assert task.difficulty(batch).tolist() == [1, 2, 0]


def test_sudoku4_text_cell_accuracy(mdm):
    task = get_task("sudoku4-text").bind(mdm)
    batch = task.load(FIXTURES / "sudoku4.csv", n=1)
    assert "1 0 3 0\n0 4 1 0" in batch.meta[0]["prompt"]
    right = "<answer>1234 3412 2143 4321</answer>"
    one_wrong = "<answer>1234 3412 2143 4312</answer>"  # blanks 14 and 15: 14 is wrong
    outputs = answer_outputs(task, batch.select([0, 0, 0]), [right, one_wrong, "<answer>12"])
    three = batch.select([0, 0, 0])
    assert task.solved(three, outputs).tolist() == [True, False, False]
    np.testing.assert_allclose(task.partial_credit(three, outputs), [1.0, 7 / 8, 0.0])


def test_countdown_task(mdm):
    task = get_task("countdown", {"gen_length": 32}).bind(mdm)
    batch = task.load(FIXTURES / "countdown.jsonl")
    outputs = answer_outputs(task, batch, ["<answer>3*8*1</answer>", "<answer>2+5+7+3</answer>"])
    assert task.solved(batch, outputs).tolist() == [True, False]


def test_countdown_reads_the_papers_input_output_records(tmp_path):
    """The UPO paper's Countdown files: `input` the numbers as one comma-separated string,
    `output` the target as a string; records of both layouts give the same items."""
    path = tmp_path / "countdown.jsonl"
    rows = [
        {"input": "30,100,93", "output": "23"},
        {"input": "3, 8, 1", "output": "24"},
        {"nums": [3, 8, 1], "target": 24},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = get_task("countdown").items(read_records(path, "countdown"), path)
    assert [(it["nums"], it["target"]) for it in items] == [
        ([30, 100, 93], 23),
        ([3, 8, 1], 24),
        ([3, 8, 1], 24),
    ]
    assert items[1]["prompt"] == items[2]["prompt"]
    assert countdown.check("<answer>100 - 93 + 30 - 14</answer>", items[0]["nums"], 23) is False
    assert countdown.check("<answer>30 - (100 - 93)</answer>", items[0]["nums"], 23) is True


def test_countdown_bad_records_are_named(tmp_path):
    task = get_task("countdown")
    with pytest.raises(UpoError, match="record 1: the numbers and the target must be integers"):
        task.items([{"input": "30,x,93", "output": "23"}], "c.jsonl")
    with pytest.raises(UpoError, match="record 2 has none of the fields output"):
        task.items([{"input": "1,2", "output": "3"}, {"input": "1,2"}], "c.jsonl")
    with pytest.raises(UpoError, match="record 1 has none of the fields target"):
        task.items([{"nums": [1, 2], "output": "3"}], "c.jsonl")


def test_task_options_and_binding_errors(mdm):
    with pytest.raises(UpoError, match="unknown option 'gen_len'"):
        get_task("gsm8k", {"gen_len": 3})
    with pytest.raises(UpoError, match="must divide"):
        get_task("gsm8k", {"gen_length": 30, "block_length": 8})
    with pytest.raises(UpoError, match="takes no options"):
        get_task("sudoku4", {"gen_length": 3})
    with pytest.raises(UpoError, match="bind the task"):
        get_task("gsm8k").load(FIXTURES / "gsm8k.jsonl")
    with pytest.raises(UpoError, match="need an MDM with a tokenizer"):
        get_task("gsm8k").bind(HFDenoiser(TinyLladaModel(TinyLladaConfig())))
    with pytest.raises(UpoError, match="x: record 1: puzzle has 2 characters, expected 16"):
        get_task("sudoku4-text").bind(mdm).items([{"puzzle": "12", "solution": "34"}], "x")
