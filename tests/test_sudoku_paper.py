"""The `sudoku4-paper` text task, the UPO paper's 4x4 protocol: how answers are read and scored,
the prompt and fixed answer template it builds through a tokenizer, and decoding on a stand-in
LLaDA (random weights built from a config; nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hf_standins import STANDIN_MASK, TinyLladaConfig, TinyLladaModel, make_tokenizer
from upo.errors import UpoError
from upo.evaluate import evaluate_policy
from upo.models.hf import HFDenoiser
from upo.policies.rules import make_rule
from upo.tasks.registry import get_task
from upo.tasks.text.sudoku_paper import answer_digits, blank_accuracy, grid_lines

FIXTURE = Path(__file__).parent / "fixtures" / "text" / "sudoku4.csv"
# The fixture's puzzles: the first has one solution; the second has three, and the file gives
# one of them.
UNIQUE = ("1030041020030301", "1234341221434321")
SEVERAL = ("0000341243210000", "1234341243212143")
OTHER_COMPLETION = "1243341243212134"  # also valid for SEVERAL, differs at 4 of its 8 blanks
# A unique puzzle with 12 blanks, so items differ in how many steps they need.
SPARSE = ("1000002000300004", "1243342141322314")


def answer(digits: str) -> str:
    """An answer in the paper's format: four rows of four inside <answer>."""
    rows = "\n".join(digits[i : i + 4] for i in range(0, 16, 4))
    return f"\n<answer>\n{rows}\n</answer>"


def bound(tokenizer=None):
    """The task bound to the character tokenizer, as an MDM would bind it."""
    mdm = SimpleNamespace(
        tokenizer=tokenizer or make_tokenizer(), mask_id=STANDIN_MASK, eos_ids=[1]
    )
    return get_task("sudoku4-paper").bind(mdm)


def items(task, pairs, short_prompts: bool = False) -> list[dict]:
    """Task items for (puzzle, solution) pairs. With `short_prompts`, each prompt is cut to a
    line of a different length plus the grid: short rows that still need left padding."""
    out = task.items([{"Puzzle": p, "Solution": s} for p, s in pairs], "test")
    if short_prompts:
        for i, it in enumerate(out):
            it["prompt"] = "solve" + " this" * i + ":" + grid_lines(it["puzzle"], " ")
    return out


def cell_tokens(task, row, meta) -> list[int]:
    """The 16 cell tokens of a row's answer template: its digits and mask tokens in order (the
    rest of the template, "<answer>" and newlines, holds neither)."""
    digit_ids = {task.tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    template = row[-meta["answer_tokens"] :]
    return [int(t) for t in template if t in digit_ids or t == task.mask_id]


def filled(task, batch, grids: list[str]) -> np.ndarray:
    """The batch's tokens with each row's mask tokens replaced, in order, by the digits that
    `grids` holds at that row's blanks: what a model writing those grids would output."""
    out = batch.tokens.copy()
    for row, meta, grid in zip(out, batch.meta, grids):
        digits = [grid[i] for i, c in enumerate(meta["puzzle"]) if c == "0"]
        ids = task.tokenizer.convert_tokens_to_ids(digits)
        row[row == task.mask_id] = ids
    return out


# -- reading and scoring answers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, digits",
    [
        (answer("1234341221434321"), "1234341221434321"),
        ("<answer>1111</answer> then <answer>1234 3412\n2143 4321</answer>", "1234341221434321"),
        ("<answer>1 2 x 3</answer>", "123" + "0" * 13),  # non-digits dropped, short padded
        ("<answer>" + "1234" * 5 + "</answer>", "1234" * 4),  # long cut to 16
        ("<answer>1234341221434321", "0" * 16),  # no closing tag: no answer
        ("1234341221434321", "0" * 16),
        ("", "0" * 16),
    ],
)
def test_answer_digits_reads_the_last_answer_span(text, digits):
    assert answer_digits(text) == digits


def test_blank_accuracy_counts_only_blanks():
    puzzle, solution = UNIQUE
    assert blank_accuracy(solution, puzzle, solution) == 1.0
    # Wrong digits at given cells do not count: only blanks are scored.
    assert blank_accuracy("9" + solution[1:], puzzle, solution) == 1.0
    blanks = [i for i, c in enumerate(puzzle) if c == "0"]
    half = list(solution)
    for i in blanks[:4]:
        half[i] = "0"
    assert blank_accuracy("".join(half), puzzle, solution) == 0.5
    assert blank_accuracy("0" * 16, puzzle, solution) == 0.0
    # No blanks scores 0, as the paper's reward does.
    assert blank_accuracy(solution, solution, solution) == 0.0


def test_score_a_valid_completion_other_than_the_given_solution():
    task = get_task("sudoku4-paper")
    for puzzle, solution in (UNIQUE, SEVERAL):
        assert task.score(answer(solution), {"puzzle": puzzle, "solution": solution}) == (
            True,
            1.0,
        )
    puzzle, solution = SEVERAL
    item = {"puzzle": puzzle, "solution": solution}
    # Solved, yet only half its blanks match the given Solution: cell accuracy undercounts.
    assert task.score(answer(OTHER_COMPLETION), item) == (True, 0.5)
    # Right at the same blanks, but row 4 repeats a 1: not solved.
    broken = OTHER_COMPLETION[:15] + "1"
    assert task.score(answer(broken), item) == (False, 0.5)
    assert task.score("no answer", item) == (False, 0.0)


# -- data and batches ----------------------------------------------------------------------------


def test_reads_the_papers_csv():
    task = bound()
    batch = task.load(FIXTURE)
    assert [(m["puzzle"], m["solution"]) for m in batch.meta] == [UNIQUE, SEVERAL]
    assert batch.meta[0]["prompt"].endswith(
        "Solve the following Sudoku puzzle: \n1 3 \n 41 \n2  3\n 3 1\n\n"
    )
    assert len(task.load(FIXTURE, n=1)) == 1
    with pytest.raises(UpoError, match="x.csv: record 1: puzzle has 4 characters, expected 16"):
        task.items([{"Puzzle": "1234", "Solution": "1234"}], "x.csv")


def test_batch_masks_only_the_blanks_of_a_left_padded_template():
    task = bound()
    pairs = [UNIQUE, SPARSE]
    batch = task.batch(items(task, pairs, short_prompts=True))
    for row, attention, meta in zip(batch.tokens, batch.attention_mask, batch.meta):
        blanks = meta["puzzle"].count("0")
        masks = np.flatnonzero(row == task.mask_id)
        # One mask token per blank, all inside the answer template at the end of the row.
        assert len(masks) == blanks and masks.min() >= len(row) - meta["answer_tokens"]
        expected = [
            task.mask_id if c == "0" else task.tokenizer.convert_tokens_to_ids(c)
            for c in meta["puzzle"]
        ]
        assert cell_tokens(task, row, meta) == expected
        template = task.tokenizer.decode(row[-meta["answer_tokens"] :])
        assert template.startswith("\n<answer>\n") and template.endswith("</answer><|eot_id|>")
        # Left padding: padding, then the real tokens through to the end of the row.
        first = int(attention.argmax())
        assert attention[first:].all() and not attention[:first].any()
        assert (row[:first] == task.tokenizer.pad_token_id).all()
    assert not batch.attention_mask[0].all()  # the shorter prompt was padded
    assert (batch.answers == -1).all()


def test_answers_of_the_solution_score_full_marks():
    task = bound()
    batch = task.batch(items(task, [UNIQUE, SEVERAL, SPARSE]))
    solutions = [m["solution"] for m in batch.meta]
    outputs = filled(task, batch, solutions)
    assert [answer_digits(a) for a in task.answers(batch, outputs)] == solutions
    assert task.partial_credit(batch, outputs).tolist() == [1.0, 1.0, 1.0]
    assert task.solved(batch, outputs).all()
    # The other completion of SEVERAL is solved too, at half the cell accuracy.
    outputs = filled(task, batch, [UNIQUE[1], OTHER_COMPLETION, SPARSE[1]])
    assert task.partial_credit(batch, outputs).tolist() == [1.0, 0.5, 1.0]
    assert task.solved(batch, outputs).all()


def test_a_tokenizer_without_a_mask_token_is_one_clear_error():
    task = bound(make_tokenizer(with_mask=False))
    with pytest.raises(UpoError) as err:
        task.batch(items(task, [UNIQUE]))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("sudoku4-paper: the tokenizer has no mask token with id 68")


def test_an_unbound_task_asks_to_be_bound():
    task = get_task("sudoku4-paper")
    with pytest.raises(UpoError, match="bind the task to an MDM first"):
        task.batch(items(task, [UNIQUE]))


# -- decoding on a stand-in LLaDA ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mdm():
    return HFDenoiser(TinyLladaModel(TinyLladaConfig()), make_tokenizer())


def test_decoding_fills_only_the_blanks_one_per_step(mdm):
    task = get_task("sudoku4-paper").bind(mdm)
    batch = task.batch(items(task, [UNIQUE, SPARSE, SEVERAL], short_prompts=True))
    blanks = np.array([m["puzzle"].count("0") for m in batch.meta])
    rule = make_rule("confidence")
    batched = evaluate_policy(mdm, task, batch, rule, batch_size=2)
    masked = batch.tokens == task.mask_id
    # Every blank is written (never with the mask token), every other token is kept.
    assert (batched.outputs != task.mask_id).all()
    assert np.array_equal(batched.outputs[~masked], batch.tokens[~masked])
    # One blank per step: the reveal steps of a row are 0 .. blanks - 1, at its masks only.
    assert ((batched.order >= 0) == masked).all()
    for order, mask, n in zip(batched.order, masked, blanks):
        assert sorted(order[mask].tolist()) == list(range(n))
    assert batched.nfe == blanks.mean()
    # Item by item, each takes as many forward calls as it has blanks, and decodes the same.
    for i, n in enumerate(blanks):
        alone = evaluate_policy(mdm, task, batch.select(np.array([i])), rule, batch_size=1)
        assert alone.nfe == n
        assert np.array_equal(alone.outputs[0], batched.outputs[i])
    one_by_one = evaluate_policy(mdm, task, batch, rule, batch_size=1)
    assert np.array_equal(one_by_one.outputs, batched.outputs)
    assert np.array_equal(one_by_one.order, batched.order)
    assert one_by_one.solve_rate == batched.solve_rate
    assert one_by_one.partial_credit == batched.partial_credit
