"""Adversarial config files and parameters: each is refused with one line `upo: error: ...`
(exit 2) before anything is written, never an internal error or a hang.

YAML tricks (alias bombs, duplicate keys, other encodings, deep nesting), seeds outside what
the random generators take, temperatures so small that scores overflow, impossible model sizes
and a text task handed to the trainer of upo's own MDM.
"""

from __future__ import annotations

import pytest
import yaml

from test_reliability import (
    mdm_train_config,
    message_lines,
    pretrain_config,
    upo_config,
    write_mdm,
    write_puzzles,
    write_yaml,
)
from upo.cli import main
from upo.config import from_dict, load_config
from upo.errors import UpoError
from upo.policies.rules import make_rule
from upo.rl.grpo import UPOConfig
from upo.rl.pretrain import PretrainConfig
from upo.training.hf_mdm import HFMDMTrainConfig
from upo.training.mdm import MDMTrainConfig

# Billion laughs, all inside one setting: each level is nine aliases of the one before. Six
# levels (9**6 strings) keep the unfixed run quick; the refusal does not depend on the depth.
_LEVELS = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
    f"&{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abcde", "bcdef")
]
ALIAS_BOMB = "task: [\n  " + ",\n  ".join(_LEVELS) + "\n]\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("configs")
    mdm = write_mdm(root / "mdm")
    data = write_puzzles(root / "train.jsonl", n=4)
    return {
        "root": root,
        "mdm": mdm,
        "data": data,
        "upo_yaml": write_yaml(root / "upo.yaml", upo_config(mdm, data)),
        "pre_yaml": write_yaml(root / "pre.yaml", pretrain_config(mdm, data)),
    }


def refused(capsys, *argv) -> str:
    """The one error line of `upo ARGV`, which must exit with 2."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = message_lines(err)
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("upo: error: "), err
    return lines[0]


def mdm_train_refused(capsys, tmp_path, text: str | bytes) -> str:
    """Run `upo mdm train` on a config holding `text`; it must refuse and leave --out absent."""
    config = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        config.write_bytes(text)
    else:
        config.write_text(text)
    out = tmp_path / "out"
    line = refused(capsys, "mdm", "train", "--config", config, "--out", out)
    assert not out.exists()
    return line


# --- YAML itself ---------------------------------------------------------------------------


def test_alias_bomb_is_refused_in_one_short_line(capsys, tmp_path):
    assert len(ALIAS_BOMB) < 800
    line = mdm_train_refused(capsys, tmp_path, ALIAS_BOMB)
    assert "bad.yaml" in line and "alias" in line
    assert len(line) < 300


def test_a_lone_anchor_is_refused(capsys, tmp_path):
    line = mdm_train_refused(capsys, tmp_path, "task: &t sudoku4\n")
    assert "bad.yaml" in line and "line 1" in line and "anchor" in line


def test_a_bad_value_is_shown_cut_short():
    huge = {"task": [["x" * 1000] * 1000] * 10}
    with pytest.raises(UpoError) as err:
        from_dict(MDMTrainConfig, huge, "c.yaml")
    message = str(err.value)
    assert "task must be str" in message and len(message) < 200
    with pytest.raises(UpoError) as err:
        from_dict(MDMTrainConfig, {"task": "sudoku4", "y" * 10_000: 1}, "c.yaml")
    assert "unknown key" in str(err.value) and len(str(err.value)) < 400


@pytest.mark.parametrize(
    "text, where",
    [
        ("task: sudoku4\nsteps: 2\nsteps: 3\n", "line 3: duplicate key 'steps'"),
        (
            "task: sudoku4\nmodel:\n  d_model: 16\n  d_model: 32\n",
            "line 4: duplicate key 'd_model'",
        ),
    ],
    ids=["top-level", "nested"],
)
def test_duplicate_keys_are_refused(capsys, tmp_path, text, where):
    line = mdm_train_refused(capsys, tmp_path, text)
    assert "bad.yaml" in line and where in line


def test_keys_of_mixed_types_are_an_unknown_key_not_a_crash(capsys, tmp_path):
    line = mdm_train_refused(capsys, tmp_path, "task: sudoku4\n1: one\nnull: none\n")
    assert "unknown key" in line


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfet\x00a\x00s\x00k\x00", b"task: sudoku4\nsteps: \xe9\n"],
    ids=["utf-16", "latin-1"],
)
def test_a_config_that_is_not_utf8_is_refused(capsys, tmp_path, data):
    line = mdm_train_refused(capsys, tmp_path, data)
    assert "bad.yaml" in line and "UTF-8" in line


@pytest.mark.parametrize(
    "text",
    ["[" * 50_000, "task: " + "[" * 60_000 + "]" * 60_000, "model: " + "{a: " * 50_000],
    ids=["open-lists", "closed-lists", "mappings"],
)
def test_deeply_nested_yaml_is_refused(capsys, tmp_path, text):
    line = mdm_train_refused(capsys, tmp_path, text)
    assert "bad.yaml" in line and "nested" in line


# --- seeds ---------------------------------------------------------------------------------

SEED_CONFIGS = [
    (MDMTrainConfig, {"task": "sudoku4"}),
    (UPOConfig, {"init": "random"}),
    (PretrainConfig, {}),
    (HFMDMTrainConfig, {"model_code": "some/dir"}),
]


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64, 10**30])
@pytest.mark.parametrize("cls, data", SEED_CONFIGS, ids=[c.__name__ for c, _ in SEED_CONFIGS])
def test_a_seed_the_generators_cannot_take_is_refused(tmp_path, cls, data, seed):
    path = write_yaml(tmp_path / "c.yaml", {**data, "seed": seed})
    with pytest.raises(UpoError, match="seed"):
        load_config(cls, path)
    assert load_config(cls, path, {"seed": 2**63 - 1}).seed == 2**63 - 1


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
@pytest.mark.parametrize("command, config", [("train", "upo_yaml"), ("pretrain", "pre_yaml")])
def test_a_bad_seed_flag_is_refused_before_out_exists(
    files, capsys, tmp_path, command, config, seed
):
    out = tmp_path / "out"
    args = ("policy", command, "--config", files[config], "--out", out, "--seed", seed)
    assert "seed" in refused(capsys, *args)
    assert not out.exists()


def test_a_bad_seed_in_an_mdm_config_is_refused_before_out_exists(capsys, tmp_path):
    text = write_yaml(tmp_path / "c.yaml", mdm_train_config(seed=-5)).read_text()
    assert "seed" in mdm_train_refused(capsys, tmp_path, text)


# --- temperatures --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax:1e-320", "softmax-vocab:1e-320", "softmax:1e-39"])
def test_a_temperature_whose_inverse_overflows_is_refused(name):
    with pytest.raises(ValueError, match="temperature"):
        make_rule(name)


@pytest.mark.parametrize("name", ["softmax:1e-320", "softmax-vocab:1e-320"])
def test_eval_refuses_a_tiny_rule_temperature(files, capsys, name):
    line = refused(
        capsys, "eval", "--task", "sudoku4", "--mdm", files["mdm"], "--data", files["data"],
        "--policies", name, "--n", "2",
    )  # fmt: skip
    assert name in line and "temperature" in line


@pytest.mark.parametrize(
    "flags",
    [("--reference", "softmax-vocab:1e-320"), ("--reference", "softmax:1e-320")],
    ids=["softmax-vocab", "softmax"],
)
def test_policy_train_refuses_a_tiny_reference_temperature(files, capsys, tmp_path, flags):
    out = tmp_path / "out"
    args = ("policy", "train", "--config", files["upo_yaml"], "--out", out, *flags)
    assert "temperature" in refused(capsys, *args)
    assert not out.exists()


@pytest.mark.parametrize("temperature", [1e-300, 1e-7])
def test_policy_train_refuses_a_tiny_sampling_temperature(files, capsys, tmp_path, temperature):
    config = upo_config(files["mdm"], files["data"], temperature=temperature)
    out = tmp_path / "out"
    args = ("policy", "train", "--config", write_yaml(tmp_path / "u.yaml", config), "--out", out)
    assert "temperature" in refused(capsys, *args)
    assert not out.exists()


# --- the MDM's model and task --------------------------------------------------------------


@pytest.mark.parametrize(
    "model, fragment",
    [
        ({"ff_mult": -1}, "ff_mult"),
        ({"ff_mult": 0}, "ff_mult"),
        ({"d_model": 0}, "d_model"),
        ({"n_layers": -3}, "n_layers"),
        ({"n_heads": 0}, "n_heads"),
        ({"d_model": 15, "n_heads": 2}, "not divisible"),
    ],
    ids=lambda v: str(v),
)
def test_impossible_model_sizes_are_refused(capsys, tmp_path, model, fragment):
    config = mdm_train_config()
    config["model"] = {**config["model"], **model}
    text = write_yaml(tmp_path / "c.yaml", config).read_text()
    line = mdm_train_refused(capsys, tmp_path, text)
    assert "model" in line and fragment in line


def test_a_text_task_is_sent_to_train_hf(capsys, tmp_path):
    text = write_yaml(tmp_path / "c.yaml", mdm_train_config(task="gsm8k")).read_text()
    line = mdm_train_refused(capsys, tmp_path, text)
    assert "gsm8k" in line and "mdm train-hf" in line and "sudoku4" in line


@pytest.mark.parametrize(
    "options, message",
    [
        ({"trust_remote_code": "false"}, "trust_remote_code must be true or false"),
        ({"trust_remote_code": 1}, "trust_remote_code must be true or false"),
        ({"allow_unpadded_batching": "yes"}, "allow_unpadded_batching must be true or false"),
        ({"mask_id": "68"}, "mask_id must be int or null"),
        ({"mask_id": True}, "mask_id must be int or null"),
        ({"dtype": 16}, "dtype must be str or dtype"),
        ({"confidence": ["model"]}, "confidence must be str"),
    ],
)
def test_hf_mdm_options_are_type_checked_before_anything_loads(
    tmp_path, monkeypatch, capsys, options, message
):
    """A quoted "false" is a non-empty string, truthy: it must never run a model's own code."""
    import transformers

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", must_not_load)
    config = tmp_path / "upo.yaml"
    data = tmp_path / "countdown.jsonl"
    data.write_text('{"nums": [1, 2], "target": 3}\n')
    config.write_text(
        yaml.safe_dump(
            {
                "task": "countdown",
                "mdm": f"hf:{tmp_path / 'model'}",
                "mdm_options": options,
                "train_data": str(data),
                "init": "random",
                "prompts_per_step": 1,
                "group_size": 2,
            }
        )
    )
    out = tmp_path / "run"
    assert main(["policy", "train", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
