"""`upo policy pretrain` on a Hugging Face MDM: the toy-size real LLaDA and Dream code, the UPO
paper's 4x4 protocol (sudoku4-paper: one state per blank, revealed one per step), the reference
max-confidence. Then the CE stage starts from that head (`upo policy train` with init:
pretrained)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reference_models import model_dir, require_reference_models
from upo.config import from_dict
from upo.errors import UpoError
from upo.models.registry import load_mdm
from upo.policies.learned import load_policy
from upo.rl.grpo import UPOConfig, train_upo
from upo.rl.pretrain import PretrainConfig, pretrain_policy

TASK_OPTIONS = {"instructions": "Solve."}  # a short prompt: the toy model's context is small


def write_puzzles(path, n: int) -> str:
    from upo.tasks.sudoku.generate import generate_puzzles
    from upo.tasks.sudoku.grid import SPECS

    pairs = generate_puzzles(SPECS["sudoku4"], n, (4, 6), seed=1)
    path.write_text(
        "".join(
            json.dumps({"puzzle": "".join(map(str, p)), "solution": "".join(map(str, s))}) + "\n"
            for p, s in pairs
        )
    )
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    require_reference_models()
    root = tmp_path_factory.mktemp("pretrain-hf")
    return {kind: str(model_dir(kind, root / kind, seed=5)) for kind in ("llada", "dream")} | {
        "data": write_puzzles(root / "train.jsonl", 10)
    }


def config(setup, kind: str, **overrides) -> PretrainConfig:
    settings = {
        "task": "sudoku4-paper",
        "mdm": f"hf:{setup[kind]}",
        "mdm_options": {"trust_remote_code": True, "dtype": "float32"},
        "task_options": TASK_OPTIONS,
        "train_data": setup["data"],
        "reference": "confidence",
        "policy": {"arch": "mdm-block", "confidence_skip": 20.0},
        "n_puzzles": 6,
        "held_out": 2,
        "epochs": 2,
        "batch_states": 8,
        "lr": 1e-3,
        "threads": 1,
        **overrides,
    }
    return from_dict(PretrainConfig, settings, "test")


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_pretrains_a_head_on_the_real_code(setup, kind, tmp_path):
    meta = pretrain_policy(config(setup, kind), tmp_path / "pre")
    # one state per blank: one blank revealed per step, every blank a state
    rows = [json.loads(line) for line in Path(setup["data"]).read_text().splitlines()]
    blanks = sum(r["puzzle"].count("0") for r in rows[:6])
    assert meta["states"] == blanks
    # max-confidence agrees with itself; the head, started as max-confidence (confidence_skip)
    # and fitted to it, agrees far above chance (4 to 6 blanks to choose from)
    assert meta["confidence_agreement"] == 1.0
    assert meta["held_out_agreement"] > 0.5
    mdm = load_mdm(f"hf:{setup[kind]}", options={"trust_remote_code": True, "dtype": "float32"})
    net = load_policy(tmp_path / "pre", mdm)
    assert net.cfg.arch == "mdm-block"
    assert not (tmp_path / "pre" / "visited").exists()  # the states go once the run is done


@pytest.mark.parametrize(
    "policy",
    [{"width": 16, "n_heads": 2, "mlp_hidden": 16}, {"arch": "mdm-block", "confidence_skip": 20.0}],
)
def test_the_ce_stage_starts_from_the_pretrained_head(setup, policy, tmp_path):
    """upo's head and the paper's pre-train on the HF MDM; policy train then starts from the
    pre-trained head (init: pretrained) with the CE reference, as the paper's max-confidence
    realisation does, and moves it."""
    cfg = config(setup, "llada", policy=policy, epochs=1)
    pretrain_policy(cfg, tmp_path / "pre")
    mdm = load_mdm(f"hf:{setup['llada']}", options={"trust_remote_code": True, "dtype": "float32"})
    run = UPOConfig(
        task="sudoku4-paper",
        task_options=TASK_OPTIONS,
        mdm=f"hf:{setup['llada']}",
        mdm_options={"trust_remote_code": True, "dtype": "float32"},
        train_data=setup["data"],
        val_data=None,
        init="pretrained",
        pretrained=str(tmp_path / "pre"),
        reference="confidence",
        steps=1,
        prompts_per_step=2,
        group_size=2,
        inner_steps=1,
        threads=1,
        reward="cell_acc",
        beta=0.1,
        lr=1e-2,
    )
    before = load_policy(tmp_path / "pre", mdm).state_dict()
    meta = train_upo(run, tmp_path / "rl")
    assert meta["complete"]
    after = load_policy(tmp_path / "rl", mdm).state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_refusals(setup, tmp_path):
    with pytest.raises(UpoError, match="target correct needs a token task's answers"):
        pretrain_policy(config(setup, "llada", target="correct"), tmp_path / "a")
    with pytest.raises(UpoError, match="is a token task and .* is a Hugging Face MDM"):
        pretrain_policy(config(setup, "llada", task="sudoku4", task_options={}), tmp_path / "b")
    with pytest.raises(UpoError, match="takes no task_options"):
        pretrain_policy(
            config(setup, "llada", task="sudoku4", mdm="checkpoints/sudoku4-mdm"), tmp_path / "c"
        )


def test_states_are_kept_on_the_cpu(setup):
    """visit_states decodes on the MDM's device and keeps what it visited on the CPU."""
    from upo.policies.resolve import resolve_policy
    from upo.rl.pretrain import load_pretrain_setting, visit_states

    s = load_pretrain_setting(config(setup, "llada"))
    ref = resolve_policy("confidence", s.mdm)
    states = visit_states(
        s.mdm,
        s.data.tokens[:2],
        ref,
        ref,
        0,
        attention_mask=s.data.attention_mask[:2],
        block_size=s.block_size,
    )
    assert states.inputs.features.device == torch.device("cpu")
    assert len(states) == sum(m["puzzle"].count("0") for m in s.data.meta[:2])
    # the reference's own choices: max-confidence visits max-confidence's states
    assert torch.equal(states.action, states.ref_choice)
