"""`sudoku4-paper-eval`: sudoku4-paper under the protocol of the authors' evaluation script. The
expectations are written from the protocol's definition (docs/paper-recipe.md, point 8): the
256-puzzle sample numpy draws after seed 42, the (instruction, template) tuple as one user message
rendered by the chat template, batches without an attention mask, whole rows decoded with special
tokens and read digits-only."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reference_models import REFERENCE_MODELS, model_dir, require_reference_models
from upo.errors import UpoError
from upo.tasks.registry import get_task
from upo.tasks.text.sudoku_paper import (
    PAPER_INSTRUCTIONS,
    script_answer,
    script_cell_accuracy,
)

UNIQUE = ("1030041020030301", "1234341221434321")
SPARSE = ("1000002000300004", "1243342141322314")
MASK = "<|mdm_mask|>"


def records(n: int) -> list[dict]:
    from upo.tasks.sudoku.generate import generate_puzzles
    from upo.tasks.sudoku.grid import SPECS

    pairs = generate_puzzles(SPECS["sudoku4"], n, (6, 9), seed=0)
    return [{"Puzzle": "".join(map(str, p)), "Solution": "".join(map(str, s))} for p, s in pairs]


def toy_tokenizer():
    """The toy-size LLaDA's own tokenizer and chat template (characters, mask id 68)."""
    require_reference_models()
    from upo.models.hf import load_tokenizer

    return load_tokenizer(str(REFERENCE_MODELS / "llada"))


def bound(tokenizer, **options):
    mdm = SimpleNamespace(tokenizer=tokenizer, mask_id=68, eos_ids=[1])
    return get_task("sudoku4-paper-eval", options).bind(mdm)


# -- the sample ----------------------------------------------------------------------------------


def test_sample_is_what_numpy_draws_after_seed_42():
    rows = records(500)
    task = get_task("sudoku4-paper-eval")
    saved = np.random.get_state()
    try:
        np.random.seed(42)
        want = np.random.choice(500, 256, replace=False)
        np.random.seed(7)
        before = np.random.get_state()[1].copy()
        items = task.items(rows, "test.csv")
        assert np.array_equal(np.random.get_state()[1], before)  # global state untouched
    finally:
        np.random.set_state(saved)
    assert [it["index"] for it in items] == want.tolist()  # that order, not sorted
    assert len({it["index"] for it in items}) == 256
    assert [it["puzzle"] for it in items] == [rows[i]["Puzzle"] for i in want]
    assert [it["solution"] for it in items] == [rows[i]["Solution"] for i in want]
    # sudoku4-paper itself keeps every puzzle in file order
    assert len(get_task("sudoku4-paper").items(rows, "test.csv")) == 500


def test_too_few_puzzles_for_the_sample():
    with pytest.raises(UpoError, match=r"small.csv: .*samples 256 puzzles; the file has 100"):
        get_task("sudoku4-paper-eval").items(records(100), "small.csv")


# -- the prompt ----------------------------------------------------------------------------------


def test_prompt_bytes_are_the_tuple_message():
    tokenizer = toy_tokenizer()
    task = bound(tokenizer, instructions="Solve.")
    items = task.items(records(256)[:0] + [{"Puzzle": UNIQUE[0], "Solution": UNIQUE[1]}] * 256, "t")
    batch = task.batch(items[:1])
    # The user message: str() of the pair, written out by hand: each string's repr, so the
    # template's newlines are backslash + n and its mask tokens sit inside the user turn.
    content = (
        r"('Solve.\n\nSolve the following Sudoku puzzle: \n1 3 \n 41 \n2  3\n 3 1\n\n', "
        r"'\n<answer>\n1"
        + MASK
        + "3"
        + MASK
        + r"\n"
        + MASK
        + "41"
        + MASK
        + r"\n2"
        + MASK
        + MASK
        + r"3\n"
        + MASK
        + "3"
        + MASK
        + r"1\n</answer><|eot_id|>')"
    )
    text = "<user>" + content + "\n<assistant>"  # the toy chat template's user turn
    assert task.script_text(items[0]) == text
    assert batch.tokens[0].tolist() == tokenizer(text)["input_ids"]
    # what the chat template makes of the Python tuple itself, as the script passes it
    pair = (
        "Solve.\n\nSolve the following Sudoku puzzle: \n1 3 \n 41 \n2  3\n 3 1\n\n",
        f"\n<answer>\n1{MASK}3{MASK}\n{MASK}41{MASK}\n2{MASK}{MASK}3\n{MASK}3{MASK}1\n"
        "</answer><|eot_id|>",
    )
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": pair}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == text
    assert (batch.tokens[0] == 68).sum() == UNIQUE[0].count("0")
    assert batch.attention_mask.all()


def test_the_papers_instructions_by_default():
    task = bound(toy_tokenizer())
    item = task.items([{"Puzzle": UNIQUE[0], "Solution": UNIQUE[1]}] * 256, "t")[0]
    assert item["prompt"].startswith(PAPER_INSTRUCTIONS + "\n\nSolve the following Sudoku")


def test_batches_are_padded_per_group_and_attended():
    """script_batch 4: each 4 consecutive rows left-padded with the pad token to their own
    longest, all of it attended; cutting a group out as upo eval does gives the script's batch."""
    tokenizer = toy_tokenizer()
    task = bound(tokenizer, instructions="Solve.", script_batch=4)
    items = task.items([{"Puzzle": UNIQUE[0], "Solution": UNIQUE[1]}] * 256, "t")[:6]
    for i, it in enumerate(items):  # prompts of different lengths
        it["prompt"] = "x" * (3 * i) + it["prompt"]
    batch = task.batch(items)
    lengths = [len(tokenizer(r)["input_ids"]) for r in ["x" * (3 * i) for i in range(6)]]
    own = [int((batch.tokens[i] != tokenizer.pad_token_id).sum()) for i in range(6)]
    assert own[1] - own[0] == lengths[1] - lengths[0] == 3
    width = batch.tokens.shape[1]
    for group in (range(0, 4), range(4, 6)):
        longest = max(own[i] for i in group)
        part = batch.select(np.array(list(group))).trimmed()
        assert part.tokens.shape[1] == longest and part.attention_mask.all()
        for row, i in enumerate(group):
            pads = part.tokens[row, : longest - own[i]]
            assert (pads == tokenizer.pad_token_id).all()
        assert all(batch.meta[i]["answer_tokens"] == longest for i in group)
    assert width == max(own)
    with pytest.raises(UpoError, match="script_batch must be at least 1"):
        get_task("sudoku4-paper-eval", {"script_batch": 0})


def test_refuses_spaces_zero_and_unknown_protocols():
    with pytest.raises(UpoError, match="reads digits only"):
        get_task("sudoku4-paper-eval", {"spaces": "zero"})
    with pytest.raises(UpoError, match="takes the chat template"):
        get_task("sudoku4-paper-eval", {"chat": False})
    with pytest.raises(UpoError, match="protocol must be one of train, paper-script"):
        get_task("sudoku4-paper", {"protocol": "script"})


# -- reading and scoring -------------------------------------------------------------------------


def test_script_answer_reads_the_last_span_digits_only():
    instructions = "<answer>\n[First raw of 4-character solution]\n</answer>"
    row = instructions + r"('x', '\n<answer>\n1234\n3412\n2143\n4321\n</answer><|eot_id|>')"
    assert script_answer(row) == "1234341221434321"
    # a newline inside a row is removed before reading; non-digits are dropped (a space too)
    assert script_answer("<answer>12\n34 x3412</answer>") == "12343412"
    # str.isdigit: a superscript two counts as a character of the answer
    assert script_answer("<answer>1²34</answer>") == "1²34"
    assert script_answer("no answer here") is None


def test_script_cell_accuracy():
    puzzle, solution = UNIQUE  # blanks at 1, 3, 4, 7, 9, 10, 12, 14
    assert script_cell_accuracy(solution, solution, puzzle) == 1.0
    assert script_cell_accuracy(None, solution, puzzle) == 0.0
    assert script_cell_accuracy("", solution, puzzle) == 0.0
    # "12" padded with zeros: blank 1 right ('2'), every other blank wrong
    assert script_cell_accuracy("12", solution, puzzle) == 1 / 8
    # cut to 16
    assert script_cell_accuracy(solution + "9999", solution, puzzle) == 1.0
    assert script_cell_accuracy(solution, solution, solution) == 0.0  # no blanks


def test_answers_decode_whole_rows_and_score():
    tokenizer = toy_tokenizer()
    task = bound(tokenizer, instructions="Solve.")
    items = task.items([{"Puzzle": UNIQUE[0], "Solution": UNIQUE[1]}] * 256, "t")[:2]
    batch = task.batch(items)
    outputs = batch.tokens.copy()
    for row in range(2):
        blanks = [i for i, c in enumerate(UNIQUE[0]) if c == "0"]
        digits = [tokenizer.convert_tokens_to_ids(UNIQUE[1][i]) for i in blanks]
        outputs[row, outputs[row] == 68] = digits if row == 0 else digits[::-1]
    texts = task.answers(batch, outputs)
    # the whole row, special tokens kept (the toy tokenizer reads quotes as <unk>)
    assert texts[0] == tokenizer.decode(outputs[0], skip_special_tokens=False)
    assert texts[0].startswith("<user>(") and texts[0].endswith(")\n<assistant>")
    assert "</answer><|eot_id|>" in texts[0]
    assert task.score(texts[0], batch.meta[0]) == (True, 1.0)
    solved, cell = task.score(texts[1], batch.meta[1])
    expected = script_cell_accuracy(script_answer(texts[1]), UNIQUE[1], UNIQUE[0])
    assert not solved and cell == expected < 1.0


# -- decoding on the toy-size real LLaDA ---------------------------------------------------------


@torch.no_grad()
def script_decode(model, x: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The protocol's decode, from its definition: the model run on the padded batch with no
    attention mask; per row, the masked position with the largest top-1 probability gets its
    argmax token, one per step, until no mask is left."""
    x = x.clone()
    while (x == mask_id).any():
        logits = model(x).logits.float()
        logits[..., mask_id] = float("-inf")  # upo never writes the mask token
        p = torch.softmax(logits, -1)
        conf, token = p.max(-1)
        conf = torch.where(x == mask_id, conf, torch.full_like(conf, -1.0))
        for row in range(x.shape[0]):
            if (x[row] == mask_id).any():
                pos = int(conf[row].argmax())
                x[row, pos] = token[row, pos]
    return x


def test_decode_runs_the_padded_batch_without_an_attention_mask(tmp_path):
    from upo.evaluate import evaluate_policy
    from upo.models.hf import HFDenoiser
    from upo.policies.rules import make_rule

    require_reference_models()
    mdm = HFDenoiser.from_pretrained(
        model_dir("llada", tmp_path, seed=3), trust_remote_code=True, dtype="float32"
    )
    task = get_task("sudoku4-paper-eval", {"instructions": "Solve.", "script_batch": 2}).bind(mdm)
    items = task.items([{"Puzzle": p, "Solution": s} for p, s in [UNIQUE, SPARSE] * 128], "t")[:2]
    items[1]["prompt"] = "xxxx" + items[1]["prompt"]  # so the first row is padded
    batch = task.batch(items)
    assert (batch.tokens[0] == mdm.tokenizer.pad_token_id).sum() == 4
    result = evaluate_policy(mdm, task, batch, make_rule("confidence"), batch_size=2)
    want = script_decode(mdm.model, torch.from_numpy(batch.tokens), mdm.mask_id)
    assert np.array_equal(result.outputs, want.numpy())
    # with the padding masked out (upo's own protocol) the padded row decodes differently
    # somewhere, or at least its logits differ: the padding is really attended here
    masked = torch.from_numpy(batch.attention_mask.copy())
    masked[0, :4] = False
    ids = torch.from_numpy(batch.tokens)
    with torch.no_grad():
        seen = mdm.model(ids).logits[0, 4:]
        hidden = mdm.model(ids, attention_mask=masked.long()).logits[0, 4:]
    assert not torch.allclose(seen, hidden, atol=1e-4)
