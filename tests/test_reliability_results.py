"""No silent wrong results, and errors that name what is wrong (issue 34, parts 2, 3, 4 and 6).

Each test does what a user would (a command line, or `upo.load_mdm` / `upo.generate`) and checks
what they would see: a refusal in one line naming the file, tensor, argument or length at fault,
instead of a decode of garbage, a traceback or an error about something else.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import upo
import upo.io_utils
import upo.models.registry
from reference_models import MASK_ID, model_dir
from test_reliability import mdm_train_config, message_lines
from upo.cli import main
from upo.errors import UpoError

ROOT = Path(__file__).resolve().parents[1]
MDM4 = ROOT / "checkpoints" / "sudoku4-mdm"
DATA4 = ROOT / "data" / "sudoku4-test.jsonl"
PAPER_CSV = (
    "Puzzle,Solution\n1030041020030301,1234341221434321\n{bad}000341243210000,1234341243212143\n"
)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(capsys, *argv) -> str:
    """The one error line of a command that must fail with exit 2."""
    code, _, err = run(capsys, *argv)
    lines = message_lines(err)
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("upo: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def llada(tmp_path_factory) -> Path:
    """A toy-size real LLaDA directory (config, model code, tokenizer, random weights)."""
    return model_dir("llada", tmp_path_factory.mktemp("models"))


def copy_model(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


def poison(weights: Path, name: str | None = None, value: float = float("nan")) -> str:
    """Set one floating tensor of a safetensors file (the first, or `name`) to `value`."""
    tensors = load_file(weights)
    name = name or next(k for k in sorted(tensors) if tensors[k].is_floating_point())
    tensors[name] = torch.full_like(tensors[name], value)
    save_file(tensors, weights, metadata={"format": "pt"})
    return name


# -- 2a. weights that are NaN or inf ----------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_an_mdm_checkpoint_with_nan_or_inf_weights_is_refused_naming_the_tensor(
    tmp_path, capsys, value
):
    mdm = copy_model(MDM4, tmp_path / "mdm")
    name = poison(mdm / "model.safetensors", value=value)
    line = error_line(
        capsys, "eval", "--task", "sudoku4", "--mdm", mdm, "--data", DATA4, "--n", 2,
        "--policies", "confidence",
    )  # fmt: skip
    kind = "NaN" if value != value else "inf"
    assert f"{mdm / 'model.safetensors'}: weight {name!r} holds {kind}" in line
    with pytest.raises(UpoError, match=f"weight {name!r} holds {kind}"):
        upo.load_mdm(mdm)


def test_a_hugging_face_mdm_whose_logits_are_nan_is_refused_at_load(tmp_path, llada):
    broken = copy_model(llada, tmp_path / "llada")
    poison(broken / "model.safetensors", "model.transformer.blocks.0.ff_out.weight")
    with pytest.raises(UpoError, match="logits hold NaN or inf on a test input") as err:
        upo.load_mdm(broken, trust_remote_code=True)
    assert str(broken) in str(err.value) and "\n" not in str(err.value)


# -- 2b, 3. one validating loader for 4x4 puzzle files ------------------------------------------


@pytest.mark.parametrize("bad", ["9", "²"])  # '²'.isdigit() is True
def test_eval_and_data_check_refuse_the_same_4x4_file_with_the_same_line(
    tmp_path, capsys, llada, bad
):
    data = tmp_path / "paper.csv"
    data.write_text(PAPER_CSV.format(bad=bad))
    expected = f"{data}: line 3: puzzle has illegal character {bad!r} at position 0"
    assert expected in error_line(capsys, "data", "check", data, "--task", "sudoku4-paper")
    for task in ("sudoku4-paper", "sudoku4-text"):
        line = error_line(
            capsys, "eval", "--task", task, "--mdm", f"hf:{llada}", "--trust-remote-code",
            "--device", "cpu", "--data", data, "--policies", "confidence",
        )  # fmt: skip
        assert expected in line


def test_a_valid_4x4_file_still_evaluates(tmp_path, capsys, llada):
    data = tmp_path / "paper.csv"
    data.write_text(PAPER_CSV.format(bad="0"))
    code, out, err = run(
        capsys, "eval", "--task", "sudoku4-paper", "--mdm", f"hf:{llada}", "--trust-remote-code",
        "--device", "cpu", "--data", data, "--policies", "confidence",
        "--instructions", "Solve it.",  # the paper's is longer than the toy model's 256 tokens
    )  # fmt: skip
    assert code == 0, err
    assert "sudoku4-paper, 2 items" in out


def test_a_non_ascii_digit_in_an_answer_is_not_a_digit():
    from upo.tasks.text.sudoku_paper import answer_digits

    assert answer_digits("<answer>\n1²34\n</answer>") == "134" + "0" * 13


# -- 2c. prompts longer than the model takes --------------------------------------------------


def test_a_prompt_longer_than_the_model_takes_is_refused_naming_the_lengths(llada):
    mdm = upo.load_mdm(llada, trust_remote_code=True)
    assert mdm.max_length == 256  # the toy config's max_sequence_length
    prompt = [5] * 250  # + 8 masks = 258 > 256
    with pytest.raises(UpoError, match="a sequence of 258 tokens .* longer than the 256"):
        upo.generate(mdm, [prompt], gen_length=8)
    out = upo.generate(mdm, [prompt[:248]], gen_length=8)  # exactly 256: decoded
    assert out.tokens.shape == (1, 256)


# -- 3. clear errors instead of internal ones -------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return upo.load_mdm(MDM4)


@pytest.mark.parametrize("row", [[1.5, 2], ["a", 2], [True, False]])
def test_ragged_token_rows_must_hold_integers(tiny, row):
    with pytest.raises(UpoError, match=r"inputs\[1\]: token ids must be integers"):
        upo.generate(tiny, [[1, 2, 3], row], gen_length=2)


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64, 2**70])
def test_generate_refuses_a_seed_the_generators_cannot_take(tiny, seed):
    puzzles = np.zeros((1, 16), dtype=np.int64)
    with pytest.raises(ValueError, match=f"seed {seed}: must be a whole number from 0 to 2"):
        upo.generate(tiny, puzzles, seed=seed)
    with pytest.raises(TypeError, match="seed must be a whole number, got float"):
        upo.generate(tiny, puzzles, seed=1.5)
    assert upo.generate(tiny, puzzles, seed=2**63 - 1).tokens.shape == (1, 16)


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_eval_refuses_a_seed_out_of_range_before_any_work(capsys, monkeypatch, seed):
    def no_loading(*args, **kwargs):
        raise AssertionError("the MDM was loaded before the seed was checked")

    monkeypatch.setattr(upo.models.registry, "load_mdm", no_loading)
    line = error_line(
        capsys, "eval", "--task", "sudoku4", "--mdm", MDM4, "--data", DATA4, "--seed", seed
    )
    assert line == f"upo: error: --seed {seed}: must be a whole number from 0 to 2**63 - 1"


# -- 4. errors that name the right thing ------------------------------------------------------


def test_a_truncated_tokenizer_is_reported_as_itself(tmp_path, llada):
    broken = copy_model(llada, tmp_path / "llada")
    text = (broken / "tokenizer.json").read_text()
    (broken / "tokenizer.json").write_text(text[: len(text) // 2])
    with pytest.raises(UpoError, match="tokenizer.json: cannot read the tokenizer") as err:
        upo.load_mdm(broken, trust_remote_code=True)
    assert str(broken / "tokenizer.json") in str(err.value)


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_a_config_without_mask_token_id_uses_the_tokenizers_mask_token(tmp_path, kind):
    """Not the config class's default (LLaDA's 50256, Dream's 151666), as docs/gpu.md says."""
    directory = model_dir(kind, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    del config["mask_token_id"]
    (directory / "config.json").write_text(json.dumps(config))
    mdm = upo.load_mdm(directory, trust_remote_code=True)
    assert mdm.mask_id == mdm.tokenizer.mask_token_id == MASK_ID
    assert upo.load_mdm(directory, trust_remote_code=True, mask_id=5).mask_id == 5


@pytest.mark.parametrize("pretrained", ["", "  "])
def test_lm_eval_refuses_an_empty_pretrained(pretrained):
    from upo.lmeval import parse_args

    with pytest.raises(UpoError, match="pretrained= is empty"):
        parse_args({"pretrained": pretrained})


def test_plot_names_the_metrics_file_without_known_curves(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "accuracy": 0.5}\n')
    line = error_line(capsys, "plot", tmp_path)
    assert line.startswith(f"upo: error: {tmp_path / 'metrics.jsonl'}: no training curve")
    assert not (tmp_path / "training_curves.png").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_writing_metrics_is_one_line_naming_the_log(tmp_path, capsys, monkeypatch):
    """/dev/full fails every write with ENOSPC, as a full disk does: metrics.jsonl goes there."""
    opened = upo.io_utils.JsonlLog.__init__

    def on_a_full_disk(self, path, truncate_after_step=None):
        opened(self, path, truncate_after_step)
        self.real_path, self.path = self.path, Path("/dev/full")

    monkeypatch.setattr(upo.io_utils.JsonlLog, "__init__", on_a_full_disk)
    config = tmp_path / "mdm.yaml"
    config.write_text(yaml.safe_dump(mdm_train_config()))
    code, _, err = run(capsys, "mdm", "train", "--config", config, "--out", tmp_path / "run")
    # after the run's opening line (its model size), one error line naming the file
    lines = [line for line in message_lines(err) if line.startswith("upo")]
    assert code == 2 and "Traceback" not in err, err
    assert lines == ["upo: error: /dev/full: cannot write (No space left on device)"], err


# -- 6. the version ---------------------------------------------------------------------------


def test_version_comes_from_the_package_metadata(capsys):
    installed = importlib.metadata.version("upo")
    assert upo.__version__ == installed
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"upo {installed}\n"
