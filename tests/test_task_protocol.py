"""Every registered task satisfies upo.tasks.base.Task, and the tasks upo's own MDM is trained on
satisfy TokenTask, with sane values: task-generic code (evaluation, GRPO, `upo eval`, `upo data`)
reads these attributes instead of probing tasks for what they have."""

from __future__ import annotations

import numpy as np
import pytest

from hf_standins import TinyLladaConfig, TinyLladaModel, make_tokenizer
from upo.errors import UpoError
from upo.models.hf import HFDenoiser
from upo.tasks.base import Task, TokenTask
from upo.tasks.registry import TASK_NAMES, TEXT_TASK_NAMES, get_task

DIFFICULTIES = {"blanks", "clues", "digits", "level"}


@pytest.fixture(scope="module")
def text_mdm():
    return HFDenoiser(TinyLladaModel(TinyLladaConfig()), make_tokenizer())


@pytest.mark.parametrize("name", TASK_NAMES + TEXT_TASK_NAMES)
def test_every_registered_task_is_a_task(name):
    task = get_task(name)
    assert isinstance(task, Task)
    assert task.name == name
    assert task.difficulty_name in DIFFICULTIES
    assert task.block_length is None or (
        isinstance(task.block_length, int) and task.block_length >= 1
    )
    # task-generic code speaks of partial credit; evaluation is upo.evaluate's, not the task's
    assert not hasattr(task, "cell_acc") and not hasattr(task, "evaluate")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_token_tasks_describe_their_layout(name):
    task = get_task(name)
    assert isinstance(task, TokenTask)
    assert task.bind(object()) is task  # one token layout, whatever the MDM
    assert task.block_length is None
    assert task.seq_len > 0 and 0 <= task.mask_id < task.vocab_size
    where = np.asarray(task.answer_positions)
    assert where.dtype == bool and where.shape == (task.seq_len,) and where.any()
    assert task.grid_side is None or task.grid_side**2 == task.seq_len
    lo, hi = task.default_difficulty
    assert 1 <= lo <= hi <= task.max_difficulty
    defaults = task.model_defaults()
    assert (defaults["vocab_size"], defaults["mask_id"], defaults["seq_len"]) == (
        task.vocab_size,
        task.mask_id,
        task.seq_len,
    )
    if name.startswith("zebra"):
        # a Zebra stream's first batch solves its base puzzles (tens of seconds); test_zebra.py
        # covers it with a small base
        return
    items = task.stream(0).batch(0, 2)
    assert items.shape == (2, task.seq_len) and not (items == task.mask_id).any()
    np.testing.assert_array_equal(items, task.stream(0).batch(0, 2))  # resumable


@pytest.mark.parametrize("name", TASK_NAMES)
def test_token_tasks_generate_score_write_and_read_back(name, tmp_path):
    task = get_task(name)
    batch = task.generate(3, task.default_difficulty, seed=0)
    assert batch.tokens.shape == (3, task.seq_len)
    masked = batch.tokens == task.mask_id
    assert masked.any(1).all() and not (masked & ~task.answer_positions).any()
    assert task.solved(batch, batch.answers).all()
    np.testing.assert_array_equal(task.partial_credit(batch, batch.answers), 1.0)
    lo, hi = task.default_difficulty
    assert ((task.difficulty(batch) >= lo) & (task.difficulty(batch) <= hi)).all()
    assert len(set(task.keys(batch))) == 3 and isinstance(task.describe(batch), str)
    path = tmp_path / f"{name}.jsonl"
    task.write(path, batch)
    np.testing.assert_array_equal(task.load(path).tokens, batch.tokens)
    checked, errors = task.check(path)
    np.testing.assert_array_equal(checked.answers, batch.answers)
    assert errors == []
    # Excluded keys are never generated again.
    again = task.generate(3, task.default_difficulty, seed=0, exclude=set(task.keys(batch)))
    assert not set(task.keys(again)) & set(task.keys(batch))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_a_missing_token_task_file_says_how_to_make_it(name, tmp_path):
    missing = tmp_path / "absent.jsonl"
    with pytest.raises(UpoError) as err:
        get_task(name).load(missing)
    assert str(err.value) == f"{missing}: no such file (make it with `upo data make`)"


@pytest.mark.parametrize("name", TEXT_TASK_NAMES)
def test_text_tasks_bind_to_a_text_mdm(name, text_mdm, tmp_path):
    task = get_task(name)
    bound = task.bind(text_mdm)
    assert isinstance(bound, Task) and not isinstance(bound, TokenTask)
    assert bound.tokenizer is text_mdm.tokenizer and bound.mask_id == text_mdm.mask_id
    assert task.tokenizer is None  # the registered task is left unbound
    missing = tmp_path / "absent.jsonl"
    with pytest.raises(UpoError, match=f"{missing}: {name} data not found"):
        bound.load(missing)
