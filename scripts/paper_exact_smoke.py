"""The paper-exact recipe (docs/paper-recipe.md) end to end at toy size, on the device when there
is one: the real LLaDA code at toy size (../shared/reference-models, random weights), the MDM in
4-bit where CUDA and bitsandbytes allow (`mdm_options.load_in_4bit`), the paper's head
(`policy.arch: mdm-block`) pre-trained to max-confidence (`upo policy pretrain`), GRPO from it with
every option of configs/llada-sudoku4-paper.yaml, and the authors' evaluation-script protocol
(task sudoku4-paper-eval: their 256-puzzle sample, tuple prompt, no attention mask).

The weights are random, so the numbers say that the path runs and how long it takes, not how well
the paper's recipe works. Prints one line per stage and writes a JSON summary; exits non-zero on a
failure. Usage: paper_exact_smoke.py [--out DIR] [--json PATH] [--allow-cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the toy-size reference models are built there

from reference_models import model_dir, require_reference_models  # noqa: E402
from upo.config import load_config  # noqa: E402
from upo.evaluate import evaluate_policy  # noqa: E402
from upo.models.quantize import refusal_4bit  # noqa: E402
from upo.models.registry import load_mdm  # noqa: E402
from upo.policies.learned import LearnedPolicy, load_policy  # noqa: E402
from upo.policies.rules import make_rule  # noqa: E402
from upo.rl.grpo import UPOConfig, train_upo  # noqa: E402
from upo.rl.pretrain import PretrainConfig, pretrain_policy  # noqa: E402
from upo.tasks.registry import get_task  # noqa: E402
from upo.tasks.sudoku.generate import generate_puzzles  # noqa: E402
from upo.tasks.sudoku.grid import SPECS  # noqa: E402

PAPER = ROOT / "configs" / "llada-sudoku4-paper.yaml"
PRETRAIN = ROOT / "configs" / "policy-pretrain-llada-sudoku4-paper.yaml"
# a one-line instruction: the toy model's 256 positions cannot hold the paper's instruction block
TASK_OPTIONS = {"chat": True, "instructions": "Fill the blanks of this 4x4 Sudoku."}


def write_data(out: Path) -> tuple[str, str]:
    """(training JSONL, test CSV of 300 puzzles: the eval script samples 256)."""
    pairs = generate_puzzles(SPECS["sudoku4"], 364, (6, 10), seed=21)
    text = ["".join(map(str, p)) + "," + "".join(map(str, s)) for p, s in pairs]
    train = out / "train.jsonl"
    train.write_text(
        "".join(
            json.dumps({"puzzle": row.split(",")[0], "solution": row.split(",")[1]}) + "\n"
            for row in text[:64]
        )
    )
    test = out / "test.csv"
    test.write_text("Puzzle,Solution\n" + "".join(row + "\n" for row in text[64:]))
    return str(train), str(test)


def stage(name: str, start: float, **fields) -> dict:
    seconds = round(time.perf_counter() - start, 2)
    print(f"ok   {name}: {seconds}s " + " ".join(f"{k}={v}" for k, v in fields.items()))
    return {"seconds": seconds, **fields}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/paper-exact-smoke")
    parser.add_argument("--json", default=None, help="write the summary here")
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run without CUDA (slow, no 4-bit)"
    )
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("FAIL no CUDA device (pass --allow-cpu to run on the CPU)", file=sys.stderr)
        return 1
    require = require_reference_models  # skips (raises) with a reason when the code is absent
    try:
        require()
    except BaseException as err:  # pytest's Skipped outside pytest
        print(f"FAIL {err}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if cuda else "cpu"
    four_bit = refusal_4bit(device) is None
    options = {
        "trust_remote_code": True,
        "dtype": "bfloat16" if cuda else "float32",
        "device": device,
        **({"load_in_4bit": True} if four_bit else {}),
    }
    summary: dict = {"device": device, "load_in_4bit": four_bit}
    if not four_bit:
        print(f"note 4-bit not run: {refusal_4bit(device)}")

    t = time.perf_counter()
    directory = model_dir("llada", out, seed=0)
    train, test = write_data(out)
    mdm_name = f"hf:{directory}"
    summary["setup"] = stage("toy LLaDA and data", t)

    t = time.perf_counter()
    pre = load_config(
        PretrainConfig,
        PRETRAIN,
        {
            "mdm": mdm_name,
            "mdm_options": options,
            "task_options": TASK_OPTIONS,
            "train_data": train,
            "n_puzzles": 24,
            "held_out": 8,
            "epochs": 1,
            "batch_states": 32,
            "threads": 4,
        },
    )
    meta = pretrain_policy(pre, out / "pretrain", resume=(out / "pretrain" / "meta.json").exists())
    summary["pretrain"] = stage(
        "policy pretrain (mdm-block head, max-confidence target)",
        t,
        states=meta["states"],
        held_out_agreement=round(meta["held_out_agreement"], 3),
    )

    t = time.perf_counter()
    cfg = load_config(
        UPOConfig,
        PAPER,
        {
            "mdm": mdm_name,
            "mdm_options": options,
            "task_options": {**TASK_OPTIONS, "spaces": "zero"},
            "train_data": train,
            "pretrained": str(out / "pretrain"),
            "max_steps": 8,
            "warmup_steps": 2,
            "prompts_per_step": 2,
            "group_size": 2,
            "inner_steps": 4,
            "eval_every": 1000,
            "checkpoint_every": 1,
            "threads": 4,
        },
    )
    resume = (out / "policy" / "train_state.json").exists() or (
        out / "policy" / "meta.json"
    ).exists()
    meta = train_upo(cfg, out / "policy", resume=resume)
    if not meta.get("complete"):
        print("FAIL policy train did not complete", file=sys.stderr)
        return 1
    summary["train"] = stage(
        "policy train (the paper config: temperature 0.8 / loss at 1, clamp, bf16 ties, ...)",
        t,
        optimizer_steps=meta["optimizer_steps"],
    )

    t = time.perf_counter()
    mdm = load_mdm(mdm_name, options=options)
    task = get_task("sudoku4-paper-eval", {**TASK_OPTIONS, "script_batch": 1}).bind(mdm)
    batch = task.load(test)
    net = load_policy(out / "policy", mdm)
    results = {}
    for name, policy in (
        ("confidence", make_rule("confidence")),
        ("learned", LearnedPolicy(net, mdm.mask_id)),
    ):
        result = evaluate_policy(mdm, task, batch, policy, batch_size=1)
        results[name] = round(float(result.partial_credit), 4)
    if len(batch) != 256:
        print(f"FAIL the eval protocol scored {len(batch)} puzzles, not 256", file=sys.stderr)
        return 1
    summary["eval"] = stage("upo eval protocol paper-script (256 puzzles, batch 1)", t, **results)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
