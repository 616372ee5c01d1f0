"""The public Python API (upo.api: load_mdm, load_policy, generate): the README's examples and
docs/models.md's own-model example run as written, and generate gives what the pieces it is
built on give (the unmasking loop, the text path), in every input form."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import upo
from conftest import SEQ_MASK
from reference_models import model_dir
from upo.decode import unmask
from upo.errors import UpoError
from upo.policies.rules import make_rule

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def run_block(code: str, monkeypatch) -> str:
    """Run a documentation example from the repository root; what it printed."""
    monkeypatch.chdir(ROOT)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})
    return printed.getvalue()


# -- the documentation's examples --------------------------------------------------------------


def readme_examples() -> tuple[str, str]:
    """(the Sudoku example, the Hugging Face example) of README's Python section."""
    section = (ROOT / "README.md").read_text().split("## Use it from Python", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    sudoku = next(b for b in blocks if 'load_mdm("sudoku9-mdm")' in b)
    hf = next(b for b in blocks if "LLaDA-8B-Instruct" in b)
    return sudoku, hf


def test_readme_sudoku_example_runs_in_under_15_lines(monkeypatch):
    code, _ = readme_examples()
    assert len([line for line in code.splitlines() if line.strip()]) < 15
    printed = run_block(code, monkeypatch)
    head, grid, order = (
        printed.split("\n", 1)[0],
        printed.split("\n")[1:10],
        printed.split("\n")[10:19],
    )
    solved = re.fullmatch(r"solved (\d+)% of 32 puzzles with 56 MDM calls each", head)
    assert solved and 20 <= int(solved[1]) <= 90, printed  # the shipped pair solves about half
    assert len(grid) == 9 and "0" not in "".join(grid)  # a full grid, no blank left
    assert any("-1" in row for row in order)  # the givens


@pytest.mark.usefixtures("bf16_attention_under_a_lowered_kernel_level")
def test_readme_hugging_face_example_runs_on_the_real_llada_code(monkeypatch, tmp_path):
    """The same code with the toy-size LLaDA (real model code) in place of the 8B download."""
    _, code = readme_examples()
    local = str(model_dir("llada", tmp_path, seed=1))  # skips without ../shared/reference-models
    swaps = {'"GSAI-ML/LLaDA-8B-Instruct"': repr(local), 'device="cuda"': 'device="cpu"'}
    for old, new in swaps.items():
        assert old in code, old
        code = code.replace(old, new)
    printed = run_block(code, monkeypatch)
    assert printed.strip()


def test_own_model_example_in_docs_runs_and_is_exact(monkeypatch):
    code = python_blocks(ROOT / "docs" / "models.md")[0]
    namespace: dict = {"__name__": "__example__"}
    monkeypatch.chdir(ROOT)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "<models.md>", "exec"), namespace)
    mdm, out = namespace["mdm"], namespace["out"]
    assert isinstance(mdm, upo.Denoiser)
    assert out.nfe.tolist() == [2, 3]  # one position per step
    # every 0 filled, the given tokens kept (the second row is left-padded by 2)
    assert out.tokens[0].tolist()[:3] == [3, 4, 5] and out.tokens[0][5] == 6
    assert out.tokens[1][2] == 7 and (out.tokens[1][3:] != 0).all() and (out.tokens[0] != 0).all()
    assert out.order[0].tolist()[:3] == [-1, -1, -1] and sorted(out.order[1][3:]) == [0, 1, 2]
    # the padded row decodes as it does alone: padding changes nothing
    alone = upo.generate(mdm, [[7, 0, 0, 0]], policy="margin")
    assert alone.tokens[0].tolist() == out.tokens[1][2:].tolist()
    assert alone.order[0].tolist() == out.order[1][2:].tolist()
    # and with the other rules, k per step and blocks
    for policy in ("confidence", "entropy", "threshold:0.5", "lookahead:2"):
        filled = upo.generate(mdm, [[3, 0, 0, 0, 0, 4]], policy=policy, k=None)
        assert (filled.tokens != 0).all(), policy
    blocks = upo.generate(mdm, [[3, 0, 0, 0, 0]], block_length=2, k=2)
    assert blocks.order[0].tolist() == [-1, 0, 0, 1, 1]


# -- generate on token batches -----------------------------------------------------------------


def test_generate_equals_the_unmasking_loop(mdm4, puzzles4):
    puzzles, _ = puzzles4
    for policy, k in (("confidence", 1), ("margin", 2), ("random", 1)):
        ours = upo.generate(mdm4, puzzles, policy=policy, k=k, batch_size=3, seed=5)
        gen = torch.Generator().manual_seed(5)
        ref = [
            unmask(mdm4, puzzles[i : i + 3], make_rule(policy), k=k, generator=gen)
            for i in range(0, len(puzzles), 3)
        ]
        assert torch.equal(ours.tokens, torch.cat([t.tokens for t in ref])), policy
        assert torch.equal(ours.order, torch.cat([t.order for t in ref])), policy
        assert torch.equal(ours.nfe, torch.cat([t.nfe for t in ref])), policy


def test_output_arrays_follow_the_input_kind(mdm4, puzzles4):
    puzzles, _ = puzzles4
    as_torch = upo.generate(mdm4, puzzles)
    as_numpy = upo.generate(mdm4, puzzles.numpy())
    as_lists = upo.generate(mdm4, puzzles.tolist())
    assert isinstance(as_torch.tokens, torch.Tensor) and isinstance(as_torch.nfe, torch.Tensor)
    assert isinstance(as_numpy.tokens, np.ndarray) and isinstance(as_lists.order, np.ndarray)
    assert (as_numpy.tokens == as_torch.tokens.numpy()).all()
    assert (as_lists.tokens == as_numpy.tokens).all() and as_torch.texts is None
    blanks = (puzzles == 0).sum(1)
    assert as_torch.nfe.tolist() == blanks.tolist()  # one cell per step
    assert (as_torch.order.max(1).values == blanks - 1).all()


def test_steps_threshold_and_k(mdm9, puzzles9):
    puzzles, _ = puzzles9
    same = puzzles[(puzzles == 0).sum(1) == (puzzles[0] == 0).sum()]  # equal blank counts
    n = int((same[0] == 0).sum())
    divisor = next(d for d in (5, 4, 3, 2) if n % d == 0)
    out = upo.generate(mdm9, same, steps=divisor)
    assert out.nfe.tolist() == [divisor] * len(same)
    k = upo.generate(mdm9, same, k=n // divisor)
    assert torch.equal(out.tokens, k.tokens)
    fast = upo.generate(mdm9, puzzles, threshold=0.5)
    named = upo.generate(mdm9, puzzles, policy="threshold:0.5")
    assert torch.equal(fast.tokens, named.tokens) and torch.equal(fast.nfe, named.nfe)
    assert (fast.nfe <= (puzzles == 0).sum(1)).all()


def test_gen_length_and_blocks_on_a_sequence_model(seq_mdm):
    prompts = [[1, 2, 3, 4], [5, 6, 1, 2]]  # then 8 masks: length 12
    out = upo.generate(seq_mdm, prompts, gen_length=8, block_length=4, policy="margin")
    assert out.tokens.shape == (2, 12) and (out.tokens[:, 4:] != SEQ_MASK).all()
    assert (out.tokens[:, :4] == np.array(prompts)).all() and (out.order[:, :4] == -1).all()
    first, second = out.order[:, 4:8], out.order[:, 8:]
    assert (first.max(1) < second.min(1)).all()  # the second block opens after the first
    assert out.nfe.tolist() == [8, 8]


def test_a_learned_policy_by_directory(tmp_path, mdm4, puzzles4):
    from upo.policies.learned import PolicyConfig, PolicyNet, save_policy

    net = PolicyNet(PolicyConfig(feature_dim=mdm4.feature_dim))
    save_policy(tmp_path / "p", net, mdm4.fingerprint(), {"kind": "policy"})
    puzzles, _ = puzzles4
    out = upo.generate(mdm4, puzzles, policy=str(tmp_path / "p"))
    assert (out.tokens != 0).all()
    policy = upo.load_policy(tmp_path / "p", mdm4)
    assert upo.load_policy(policy, mdm4) is policy
    assert torch.equal(upo.generate(mdm4, puzzles, policy=policy).tokens, out.tokens)


@pytest.mark.parametrize(
    "inputs, kwargs, fragment",
    [
        ([[0] * 16], {"threshold": 0.9, "policy": "margin"}, "give it or a policy"),
        ([[0] * 16], {"threshold": 0.9, "k": 2}, "without k/steps"),
        ([[0] * 16], {"k": 0}, "k must be at least 1"),
        ([[0] * 16], {"k": 2, "steps": 4}, "given without steps"),
        ([[0] * 16], {"threshold": 1.5}, r"threshold must be in \(0, 1\]"),
        ([[0] * 16], {"batch_size": 0}, "batch_size must be at least 1"),
        ([[0] * 16], {"policy": "confidance"}, "unknown policy 'confidance'"),
        ([[0] * 15], {}, "exactly 16 tokens, got 15"),
        ([[9] + [0] * 15], {}, "token id 9 is outside the MDM's vocabulary of 5"),
        (["a prompt"], {}, "text prompts need an MDM with a tokenizer"),
        ([], {}, "inputs is empty"),
        (np.zeros((2, 16)), {}, "must be integers"),
        ([[0] * 16], {"steps": 3}, "steps 3 must divide gen_length 16"),
        ([[0] * 16], {"steps": 0}, "steps must be at least 1, got 0"),
        ([[0] * 16], {"token_temperature": -1.0}, "token_temperature must be 0 or more"),
        ([[0] * 16], {"token_temperature": float("nan")}, "token_temperature must be 0 or more"),
        ([[0] * 16], {"attention_mask": np.ones((1, 4))}, "attention_mask has shape"),
    ],
)
def test_bad_arguments_are_one_clear_error(mdm4, inputs, kwargs, fragment):
    with pytest.raises(UpoError, match=fragment):
        upo.generate(mdm4, inputs, **kwargs)


# -- loading -----------------------------------------------------------------------------------


def test_load_mdm_refusals(tmp_path):
    with pytest.raises(UpoError, match="MDM checkpoint directory not found"):
        upo.load_mdm(tmp_path / "missing" / "deeper" / "dir")
    with pytest.raises(UpoError, match="trust_remote_code is for Hugging Face models"):
        upo.load_mdm(ROOT / "checkpoints" / "sudoku4-mdm", trust_remote_code=True)
    with pytest.raises(UpoError, match="run on the CPU, not cuda"):
        upo.load_mdm(ROOT / "checkpoints" / "sudoku4-mdm", device="cuda")
    mdm = upo.load_mdm(ROOT / "checkpoints" / "sudoku4-mdm", dtype=torch.float32)
    assert mdm.dtype_used == "float32" and isinstance(mdm, upo.Denoiser)


def test_one_loader_reads_hub_ids_with_or_without_hf(tmp_path, monkeypatch):
    """upo.load_mdm, the CLI and the lm-eval model share one loader: a Hub id is a Hub id with
    or without `hf:`, a local path never is, and upo's own MDM is no Hugging Face model."""
    from upo.models.registry import hf_source

    assert hf_source("GSAI-ML/LLaDA-8B-Instruct") == "GSAI-ML/LLaDA-8B-Instruct"
    assert hf_source("hf:GSAI-ML/LLaDA-8B-Instruct") == "GSAI-ML/LLaDA-8B-Instruct"
    assert hf_source(f"hf:{tmp_path}") == str(tmp_path)
    assert hf_source(ROOT / "checkpoints" / "sudoku4-mdm") is None
    assert hf_source(tmp_path) is None  # an existing directory without a transformers config
    # owner/name whose owner is a local directory: a missing local checkpoint, not a download
    (tmp_path / "runs").mkdir()
    missing = tmp_path / "runs" / "my-mdm"
    monkeypatch.chdir(tmp_path)
    assert hf_source("runs/my-mdm") is None and hf_source("hf:runs/my-mdm") == "runs/my-mdm"
    with pytest.raises(UpoError, match=r"runs/ is a local directory.*write hf:runs/my-mdm"):
        upo.load_mdm("runs/my-mdm")
    assert not missing.exists()
    with pytest.raises(UpoError, match="is for Hugging Face models"):
        upo.load_mdm(ROOT / "checkpoints" / "sudoku4-mdm", convention="llada")


def test_import_upo_stays_light():
    code = "import sys, upo; assert 'torch' not in sys.modules; print(upo.__version__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert set(upo.__all__) <= set(dir(upo))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        upo.nothing  # noqa: B018


# -- text prompts on the real LLaDA code (toy size) --------------------------------------------


@pytest.fixture(scope="module")
def llada(tmp_path_factory):
    path = model_dir("llada", tmp_path_factory.mktemp("api-llada"), seed=1)
    return upo.load_mdm(f"hf:{path}", trust_remote_code=True, dtype="float32")


def test_text_prompts_equal_the_text_generation_path(llada):
    from upo.text_generation import generate

    prompts = ["what is 2+2?", "hi", "count: 1 2 3 4 5 6 7 8 9"]
    out = upo.generate(llada, prompts, gen_length=16, block_length=8, steps=8, batch_size=2)
    ref = generate(llada, prompts, make_rule("confidence"), 16, 8, steps=8, batch_size=2)
    assert out.texts == ref
    assert out.tokens.shape == (3, 16) and out.order.shape == (3, 16)
    assert out.nfe.tolist() == [8, 8, 8] and (out.order.max(1) == 7).all()
    # a single string is a batch of one, decoded as in the batch
    one = upo.generate(llada, prompts[1], gen_length=16, block_length=8, steps=8)
    assert one.texts == [ref[1]]
    # token ids with gen_length on an MDM with a tokenizer give texts too
    ids = [llada.tokenizer(p)["input_ids"] for p in prompts]
    by_ids = upo.generate(llada, ids, gen_length=16, block_length=8, steps=8)
    plain = upo.generate(llada, prompts, gen_length=16, block_length=8, steps=8, chat=False)
    assert by_ids.texts == plain.texts
