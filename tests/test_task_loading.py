"""One loading path for every task: `task.load` is what eval, GRPO, pre-training and the demo use,
and `task.generate` is what MDM validation uses; both behave the same across tasks."""

from __future__ import annotations

import numpy as np
import pytest

from upo.errors import UpoError
from upo.evaluation import load_eval_data
from upo.tasks.registry import TASK_NAMES, get_task
from upo.tasks.sudoku.io import load_puzzles, write_jsonl

SMALL = {"sudoku4": (6, 9), "addition": (1, 8), "addition-carry": (4, 8), "zebra4": (1, 14)}


@pytest.fixture(params=sorted(SMALL))
def made(request, tmp_path):
    """(task, generated batch, the file it was written to)."""
    task = get_task(request.param)
    batch = task.generate(8, SMALL[request.param], seed=1)
    path = tmp_path / f"{request.param}.jsonl"
    if request.param.startswith("sudoku"):
        write_jsonl(path, batch.tokens, batch.answers)
    else:
        task.write(path, batch)
    return task, batch, path


def test_every_registered_task_builds():
    for name in TASK_NAMES:
        task = get_task(name)
        assert task.seq_len > 0 and 0 <= task.mask_id < task.vocab_size


def test_load_returns_the_written_batch(made):
    task, batch, path = made
    loaded = task.load(path)
    assert np.array_equal(loaded.tokens, batch.tokens)
    assert np.array_equal(loaded.answers, batch.answers)
    assert loaded.attention_mask.all()
    # Masked positions are exactly where the answer differs from the prompt's blanks.
    masked = loaded.tokens == task.mask_id
    assert masked.any(1).all() and (loaded.answers[masked] != task.mask_id).all()
    assert (task.solved(loaded, loaded.answers) == 1).all()
    assert (task.partial_credit(loaded, loaded.answers) == 1).all()
    assert len(task.difficulty(loaded)) == len(loaded)


def test_eval_and_training_loaders_use_task_load(made):
    task, batch, path = made
    assert np.array_equal(load_eval_data(task, str(path), n=3).tokens, batch.tokens[:3])
    assert np.array_equal(task.load(str(path)).answers, batch.answers)  # GRPO, pre-training
    with pytest.raises(UpoError, match=r"\.missing: no such file \(make it with `upo data make`\)"):
        task.load(str(path) + ".missing")


def test_sudoku_load_matches_the_sudoku_loader(tmp_path):
    task = get_task("sudoku4")
    batch = task.generate(5, (8, 10), seed=3)
    path = tmp_path / "s.jsonl"
    write_jsonl(path, batch.tokens, batch.answers)
    data = load_puzzles(path, task.spec)
    assert np.array_equal(task.load(path).tokens, data.puzzles)
    assert np.array_equal(task.load(path).answers, data.solutions)


def test_skip_invalid_reports_on_stderr(tmp_path, capsys):
    task = get_task("addition")
    path = tmp_path / "a.txt"
    path.write_text("1+2\nbad\n3+4=7\n")
    with pytest.raises(UpoError, match="line 2: expected 'a\\+b' or 'a\\+b=c'"):
        task.load(path)
    assert len(task.load(path, skip_invalid=True)) == 2
    assert "skipped 1 invalid lines" in capsys.readouterr().err


def test_a_file_of_another_task_is_a_clear_error(made, tmp_path):
    task, _, path = made
    other = get_task("zebra4" if task.name != "zebra4" else "addition")
    with pytest.raises(UpoError, match=r"line 1: "):
        other.load(path)
