"""dtype "auto" for upo's own MDM (issue 29): bfloat16 only where the CPU does bf16 natively."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from upo.cli import main
from upo.errors import UpoError
from upo.evaluate import evaluate_policy
from upo.models import precision
from upo.models.registry import load_mdm
from upo.policies.rules import make_rule
from upo.tasks.registry import get_task
from upo.training.mdm import MDMTrainConfig, build_model, run_config

REPO = Path(__file__).resolve().parents[1]
MDM = REPO / "checkpoints" / "sudoku4-mdm"
DATA = REPO / "data" / "sudoku4-test.jsonl"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16\n")
    assert precision.cpu_flags(info) == {"fpu", "avx2", "amx_bf16"}
    assert precision.cpu_model_name(info) == "Some CPU"
    assert precision.cpu_flags(tmp_path / "absent") == set()


@pytest.mark.parametrize(
    "flags, kernels, native",
    [
        ({"avx2", "amx_bf16"}, "AVX512", True),
        ({"avx2", "avx512_bf16"}, "AVX512", True),
        ({"avx2", "avx512f"}, "AVX512", False),  # AVX512 without bf16 (Skylake, say)
        ({"avx2", "amx_bf16"}, "AVX2", False),  # torch held to AVX2 kernels: bf16 emulated
        ({"avx2"}, "AVX2", False),  # issue 29's EPYC
    ],
)
def test_native_bf16_needs_the_flag_and_torchs_avx512_kernels(monkeypatch, flags, kernels, native):
    monkeypatch.setattr(precision.sys, "platform", "linux")
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    monkeypatch.setattr(precision.torch.backends.cpu, "get_cpu_capability", lambda: kernels)
    precision._cpu_flags_say_bf16.cache_clear()
    try:
        assert precision._cpu_flags_say_bf16() is native
    finally:
        precision._cpu_flags_say_bf16.cache_clear()


@pytest.mark.parametrize("native, auto", [(True, "bfloat16"), (False, "float32")])
def test_auto_follows_the_cpu_flag(cpu, native, auto):
    cpu(native)
    assert precision.cpu_has_fast_bf16() is native
    assert precision.resolve_dtype("auto", "cpu") == auto
    assert precision.resolve_dtype(None, "cpu") == auto
    assert precision.resolve_dtype("auto", "cuda") == "bfloat16"
    for explicit in ("bfloat16", "float32"):  # asked for: never changed
        assert precision.resolve_dtype(explicit, "cpu") == explicit


@pytest.mark.parametrize("forced", ["bfloat16", "float32"])
def test_upo_dtype_overrides_the_cpu_flag(cpu, monkeypatch, forced):
    cpu(forced == "float32")  # the flag says the opposite of UPO_DTYPE
    monkeypatch.setenv(precision.ENV_VAR, forced)
    assert precision.resolve_dtype("auto", "cpu") == forced
    assert precision.cpu_has_fast_bf16() is (forced == "bfloat16")


def test_a_bad_upo_dtype_is_one_clear_error(cpu, monkeypatch):
    monkeypatch.setenv(precision.ENV_VAR, "float16")
    with pytest.raises(UpoError, match="UPO_DTYPE='float16': must be bfloat16 or float32"):
        precision.resolve_dtype("auto", "cpu")


def decode(mdm, n: int = 12):
    task = get_task("sudoku4")
    batch = task.load(DATA)
    batch = batch.select(np.arange(n))
    result = evaluate_policy(mdm, task, batch, make_rule("confidence"), batch_size=4)
    logits, _ = mdm(torch.as_tensor(batch.tokens))
    return result.outputs, result.order, logits


@pytest.mark.parametrize("native, same_as", [(False, "float32"), (True, "bfloat16")])
def test_auto_decodes_exactly_as_the_dtype_it_chose(cpu, native, same_as):
    cpu(native)
    auto = load_mdm(MDM)
    forced = load_mdm(MDM, options={"dtype": same_as})
    assert auto.dtype_used == forced.dtype_used == same_as
    assert auto.cfg.bf16 is (same_as == "bfloat16")
    out_a, order_a, logits_a = decode(auto)
    out_f, order_f, logits_f = decode(forced)
    assert np.array_equal(out_a, out_f) and np.array_equal(order_a, order_f)
    assert torch.equal(logits_a, logits_f)  # bit for bit, not just the same argmax


def test_the_choice_is_said_in_the_results_header_not_before_errors(cpu, tmp_path, capsys):
    """The eval table's header names the dtype and why; stderr stays one line on bad input."""
    cpu(False)
    argv = ["eval", "--task", "sudoku4", "--mdm", str(MDM), "--data", str(DATA)]
    assert main([*argv, "--n", "3", "--policies", "confidence"]) == 0
    header = "(float32: no native bf16 on this CPU; --dtype bfloat16 to force)"
    assert header in capsys.readouterr().out
    assert main([*argv, "--n", "3", "--policies", "no-such-rule"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("native, used", [(False, "float32"), (True, "bfloat16")])
def test_eval_json_records_the_dtype_used(cpu, tmp_path, capsys, native, used):
    cpu(native)
    out = tmp_path / "eval.json"
    argv = ["eval", "--task", "sudoku4", "--mdm", MDM, "--data", DATA]
    argv += ["--policies", "confidence", "--n", "3", "--json", out]
    assert main([str(a) for a in argv]) == 0
    saved = json.loads(out.read_text())
    assert saved["dtype"] == used and saved["dtype_requested"] == "auto"
    assert saved["policy_dtype"] == used  # a learned policy runs in its MDM's precision


@pytest.mark.parametrize("flags, dtype", [([], "auto"), (["--dtype", "float32"], "float32")])
def test_demo_passes_dtype_to_load_mdm(monkeypatch, tmp_path, flags, dtype):
    from upo import demo

    seen = []

    def fake_load_mdm(path, threads=None, options=None):
        seen.append(options)
        raise UpoError("stop here")  # the demo itself is `make demo`'s business

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(demo, "load_mdm", fake_load_mdm)
    assert main(["demo", "--out", str(tmp_path / "report"), *flags]) == 2
    assert seen == [{"dtype": dtype}]


def test_demo_refuses_an_unknown_dtype(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["demo", "--dtype", "float16"])
    assert stop.value.code == 2 and "float16" in capsys.readouterr().err


@pytest.mark.parametrize(
    "native, dtype, bf16",
    [
        (False, "auto", False),  # emulated bf16 would be ~60x slower: train in float32
        (True, "auto", True),
        (True, "float32", False),
        (False, "bfloat16", True),
    ],
)
def test_mdm_training_arithmetic(cpu, native, dtype, bf16):
    cpu(native)
    cfg = MDMTrainConfig(task="sudoku4", model={"d_model": 16, "n_layers": 2, "n_heads": 2})
    cfg.dtype = dtype
    assert build_model(cfg, get_task("sudoku4")).cfg.bf16 is bf16
    # auto is left out of config.json, so runs from before the field still --resume
    assert ("dtype" in run_config(cfg)) is (dtype != "auto")


def test_mdm_training_refuses_an_unknown_dtype():
    cfg = MDMTrainConfig(task="sudoku4", dtype="float16")
    with pytest.raises(ValueError, match="dtype must be one of"):
        cfg.validate()


@pytest.mark.parametrize(
    "argv, target, read",
    [
        (["policy", "train", "--config", "configs/upo-sudoku9.yaml"], "upo.rl.grpo.train_upo",
         lambda cfg: cfg.mdm_options["dtype"]),
        (["policy", "pretrain", "--config", "configs/policy-pretrain-sudoku9.yaml"],
         "upo.rl.pretrain.pretrain_policy", lambda cfg: cfg.mdm_options["dtype"]),
        (["mdm", "train", "--config", "configs/mdm-sudoku4.yaml"], "upo.training.mdm.train_mdm",
         lambda cfg: cfg.dtype),
    ],
)  # fmt: skip
def test_every_training_command_takes_dtype(monkeypatch, tmp_path, argv, target, read):
    seen = {}

    class Reached(BaseException):  # run_guarded turns an Exception into an exit status
        pass

    def stop(cfg, *args, **kwargs):
        seen["dtype"] = read(cfg)
        raise Reached

    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, stop)
    monkeypatch.chdir(REPO)
    with pytest.raises(Reached):
        main([*argv, "--out", str(tmp_path / "run"), "--dtype", "float32"])
    assert seen["dtype"] == "float32"
