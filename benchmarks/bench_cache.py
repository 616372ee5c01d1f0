"""Block-wise key/value caching (cache none / prefix / dual) x policies, ratios within one run.

Usage: python benchmarks/bench_cache.py [--threads 1] [--items 4] [--task-items 256] [--device auto]
       [--only mid-llada|addition|zebra4|sudoku4|toy-pipeline] [--toy-dir runs/paper-toy] [--json OUT]

Five settings, each timed with the three caches run back to back per policy, so that a load
change on the machine moves them alike:
- mid-llada: the real LLaDA code (../shared/reference-models, one level above the repository)
  at mid size: d_model 256, 6 layers, 8 heads, MLP 1024, float32, random sharpened weights (as
  the tests make them: confident, context-dependent predictions); 400-token prompts, 128
  generated positions in blocks of 32, batch 2. Policies confidence, threshold:0.9 and an
  untrained learned head (its cost is real, its choices random). Random weights have no
  accuracy: "same" is the share of answer tokens equal to the uncached decode under the same
  policy, a worst case for the approximation (sharpened random attention is far less smooth
  than a trained model's; tests/test_cache.py measures the logit drift).
- addition: the shipped addition MDM (trained) on data/addition-test.jsonl, a prompt (the two
  numbers) and an answer decoded as one block: prefix and dual both cache the prompt. Solve
  rates with Wilson 95% intervals; the learned policy is the shipped addition-policy.
- zebra4: the shipped Zebra MDM (trained; it solves almost no puzzle, so its accuracy is the
  share of cells right, cell_acc) on data/zebra4-test.jsonl: 70 clue tokens before 16 answer
  cells, one block; the learned policy is the shipped zebra-policy.
- sudoku4: upo's own 4x4 MDM (sudoku4-mdm, data/sudoku4-test.jsonl). No prompt before the
  blanks and no blocks: the cache only skips the givens before the first blank, so expect no
  gain; listed to show that it does not cost accuracy there either.
- toy-pipeline: the paper's 4x4 protocol at toy size (scripts/paper_pipeline_toy.sh, its OUT in
  --toy-dir): the trained real-code LLaDA on the paper's text format (chat template, instruction,
  puzzle, answer template; one block), the test CSV, and the UPO-trained policy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # reference_models: the real model code and sharpen()

CACHES = ("none", "prefix", "dual")


def mid_llada(seed: int = 0):
    """The real LLaDA code at d_model 256, 6 layers, 8 heads, MLP 1024, random weights."""
    import transformers

    from reference_models import MASK_ID, require_reference_models, sharpen
    from upo.models.hf import HFDenoiser

    config = transformers.AutoConfig.from_pretrained(
        require_reference_models() / "llada", trust_remote_code=True
    )
    config.d_model, config.n_layers, config.n_heads, config.n_kv_heads = 256, 6, 8, 8
    config.mlp_hidden_size, config.max_sequence_length = 1024, 1024
    torch.manual_seed(seed)
    model = transformers.AutoModel.from_config(config, trust_remote_code=True).float()
    sharpen(model, seed)
    return HFDenoiser(model, None, mask_id=MASK_ID, name="mid-llada")


def untrained_head(feature_dim: int, mask_id: int):
    from upo.policies.learned import LearnedPolicy, PolicyConfig, PolicyNet

    torch.manual_seed(0)
    return LearnedPolicy(PolicyNet(PolicyConfig(feature_dim)).eval(), mask_id, greedy=True)


def bench_mid_llada(items: int, device: str) -> list[dict]:
    from upo.api import generate

    mdm = mid_llada()
    mdm.model.to(device)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(4, 60, (items, 400), generator=g).numpy()  # numpy out
    policies = {
        "confidence": "confidence",
        "threshold:0.9": "threshold:0.9",
        "learned (untrained)": untrained_head(mdm.feature_dim, mdm.mask_id),
    }
    # warm-up: the first forwards of a process pay for allocations and rotary tables
    generate(mdm, prompts[:2], gen_length=32, block_length=32, batch_size=2, cache="dual")
    rows, confidence_none = [], None
    for name, policy in policies.items():
        runs = {}
        for cache in CACHES:
            start = time.perf_counter()
            out = generate(
                mdm, prompts, policy, gen_length=128, block_length=32, batch_size=2, cache=cache
            )
            wall = time.perf_counter() - start
            runs[cache] = (out, wall)
        base = runs["none"][0].tokens[:, 400:]
        confidence_none = confidence_none or runs["none"][1]
        for cache, (out, wall) in runs.items():
            rows.append(
                {
                    "setting": "mid-llada",
                    "policy": name,
                    "cache": cache,
                    "items_per_s": items / wall,
                    "speedup": runs["none"][1] / wall,
                    "speedup_vs_confidence_none": confidence_none / wall,
                    "nfe": float(out.nfe.mean()),
                    "same_as_none": float((out.tokens[:, 400:] == base).mean()),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_token_task(task_name: str, mdm_name: str, data: str, policies: dict, n: int):
    """A token task of upo's own MDMs: its shipped MDM, the first n items of a shipped file."""
    from upo.models.registry import load_mdm
    from upo.tasks.registry import get_task

    task = get_task(task_name)
    batch = task.load(ROOT / data)
    batch = batch.select(np.arange(min(n, len(batch))))
    return bench_task(task_name, task, batch, load_mdm(mdm_name), policies)


def bench_toy_pipeline(toy: Path, n: int) -> list[dict]:
    """The toy pipeline's 4x4 protocol (scripts/paper_pipeline_toy.sh): its trained real-code
    LLaDA on the paper's text format, the test CSV, the rules and the UPO-trained policy."""
    from upo.models.registry import load_mdm
    from upo.tasks.registry import get_task

    mdm = load_mdm(
        f"hf:{toy / 'mdm' / 'model'}", None, {"trust_remote_code": True, "dtype": "float32"}
    )
    task = get_task("sudoku4-paper", {"instructions": "Fill the blanks of this 4x4 Sudoku."})
    task = task.bind(mdm)
    batch = task.load(str(toy / "data" / "test.csv"), n=n)
    policies = {"confidence": "confidence", "threshold:0.9": "threshold:0.9"}
    policies["UPO policy"] = str(toy / "policy")
    return bench_task("toy-pipeline 4x4", task, batch, mdm, policies)


def bench_task(setting: str, task, batch, mdm, policies: dict) -> list[dict]:
    from upo.evaluate import evaluate_policy, wilson_interval
    from upo.policies.registry import resolve_policy

    filled = (batch.tokens == mdm.mask_id) & batch.attention_mask  # the answer positions
    rows = []
    for name, spec in policies.items():
        policy = resolve_policy(spec, mdm)
        results = {c: evaluate_policy(mdm, task, batch, policy, 64, cache=c) for c in CACHES}
        for cache, r in results.items():
            lo, hi = wilson_interval(float(r.solved.sum()), len(r.solved))
            rows.append(
                {
                    "setting": setting,
                    "policy": name,
                    "cache": cache,
                    "items_per_s": r.items_per_s,
                    "speedup": results["none"].seconds / r.seconds,
                    "nfe": r.nfe,
                    "solve_rate": r.solve_rate,
                    "solve_ci95": [lo, hi],
                    "cell_acc": r.partial_credit,
                    "same_as_none": float((r.outputs == results["none"].outputs)[filled].mean()),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| setting | policy | cache | items/s | x none | x none+confidence | NFE "
        "| solve rate (95% CI) | cell acc | same tokens as none |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        solve = (
            f"{r['solve_rate']:.3f} ({r['solve_ci95'][0]:.3f}-{r['solve_ci95'][1]:.3f})"
            if "solve_rate" in r
            else "-"
        )
        cell = f"{r['cell_acc']:.3f}" if "cell_acc" in r else "-"
        vs = r.get("speedup_vs_confidence_none")
        vs_confidence = "-" if vs is None else f"{vs:.2f}"
        lines.append(
            f"| {r['setting']} | {r['policy']} | {r['cache']} | {r['items_per_s']:.3g} | "
            f"{r['speedup']:.2f} | {vs_confidence} | "
            f"{r['nfe']:.1f} | {solve} | {cell} | {r['same_as_none']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--items", type=int, default=4, help="mid-llada prompts (batches of 2)")
    ap.add_argument("--task-items", type=int, default=256, help="addition/zebra4/sudoku4 items")
    ap.add_argument("--device", default="auto", help="mid-llada's device (auto: cuda if any)")
    ap.add_argument(
        "--only", choices=("mid-llada", "addition", "zebra4", "sudoku4", "toy-pipeline")
    )
    ap.add_argument("--toy-dir", default="runs/paper-toy", help="paper_pipeline_toy.sh's OUT")
    ap.add_argument("--toy-items", type=int, default=500, help="toy-pipeline test puzzles")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.only in (None, "mid-llada"):
        rows += bench_mid_llada(args.items, device)
    if args.only in (None, "addition"):
        learned = {"confidence": "confidence", "threshold:0.9": "threshold:0.9"}
        learned["addition-policy"] = "addition-policy"
        rows += bench_token_task(
            "addition", "addition-mdm", "data/addition-test.jsonl", learned, args.task_items
        )
    if args.only in (None, "zebra4"):
        learned = {"confidence": "confidence", "threshold:0.9": "threshold:0.9"}
        learned["zebra-policy"] = "zebra-policy"
        rows += bench_token_task(
            "zebra4", "zebra-mdm", "data/zebra4-test.jsonl", learned, args.task_items
        )
    if args.only in (None, "sudoku4"):
        rules = {"confidence": "confidence", "threshold:0.9": "threshold:0.9"}
        rows += bench_token_task(
            "sudoku4", "sudoku4-mdm", "data/sudoku4-test.jsonl", rules, args.task_items
        )
    if args.only in (None, "toy-pipeline"):
        toy = Path(args.toy_dir)
        if (toy / "mdm" / "model").is_dir() and (toy / "policy").is_dir():
            rows += bench_toy_pipeline(toy, args.toy_items)
        else:
            print(
                f"toy-pipeline: {toy} has no trained MDM and policy (scripts/paper_pipeline_toy.sh)"
            )
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
