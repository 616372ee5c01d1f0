"""The body of scripts/gpu_smoke.sh (see there). Prints one line per check and a JSON summary."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the offline stand-in models live with the tests

from hf_standins import save_remote_code_model  # noqa: E402
from upo.decode import unmask  # noqa: E402
from upo.models.hf import HFDenoiser  # noqa: E402
from upo.policies.rules import make_rule  # noqa: E402
from upo.rl.grpo import UPOConfig, train_upo  # noqa: E402
from upo.text_generation import generate  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def check_parity(d, device) -> dict:
    """A left-padded batch decodes as each item alone, on the device."""
    gen = torch.Generator().manual_seed(0)
    seqs = [
        torch.cat([torch.randint(4, 40, (n,), generator=gen), torch.full((6,), d.mask_id)])
        for n in (3, 5, 8, 4)
    ]
    length = max(len(s) for s in seqs)
    tokens = torch.zeros(len(seqs), length, dtype=torch.long)
    mask = torch.zeros(len(seqs), length, dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, length - len(s) :] = s
        mask[i, length - len(s) :] = True
    tokens, mask = tokens.to(device), mask.to(device)
    rule = make_rule("confidence")
    batched = unmask(d, tokens, rule, attention_mask=mask)
    worst, agree = 0.0, []
    for i, s in enumerate(seqs):
        s = s.to(device)
        alone = unmask(d, s[None], rule)
        agree.append(float((batched.tokens[i, mask[i]] == alone.tokens[0]).float().mean()))
        a = d.forward(s[None])[0][0, :, : d.mask_id]
        b = d.forward(tokens[i : i + 1], mask[i : i + 1])[0][0, mask[i], : d.mask_id]
        worst = max(worst, float((a - b).abs().max()))
    if worst > 1e-3 or min(agree) < 1.0:
        raise SystemExit(f"FAIL padding parity: max logit diff {worst:.2e}, agreement {agree}")
    return {"max_logit_diff": worst, "token_agreement": min(agree)}


def grpo_two_steps(model_dir: Path, device, tmp: Path) -> dict:
    data = tmp / "countdown.jsonl"
    rows = [{"target": 24, "nums": [3, 8, 1]}, {"target": 10, "nums": [2, 5, 7, 3]}] * 2
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = UPOConfig(
        task="countdown",
        mdm=f"hf:{model_dir}",
        mdm_options={"trust_remote_code": True, "dtype": "float32", "device": str(device)},
        task_options={"gen_length": 16, "block_length": 8},
        train_data=str(data),
        init="random",
        policy={"width": 32, "n_heads": 4, "mlp_hidden": 32, "confidence_skip": 20.0},
        reference="confidence",
        steps=2,
        prompts_per_step=2,
        group_size=6,
        inner_steps=4,
        temperature=0.8,
        beta=1e-4,
        lr=3e-6,
        grad_clip=0.2,
        reward="solved",
        threads=4,
    )
    start = time.perf_counter()
    meta = train_upo(cfg, tmp / "policy")
    lines = (tmp / "policy" / "metrics.jsonl").read_text().splitlines()
    if not meta.get("complete") or len(lines) != 2:
        raise SystemExit(f"FAIL grpo: meta {meta}, {len(lines)} metric lines")
    last = json.loads(lines[-1])
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "states_per_step": last["states"],
        "seconds_rollout": last["seconds_rollout"],
        "seconds_update": last["seconds_update"],
    }


def real_code_checks(device, tmp: Path) -> dict:
    """The models' own code (../shared/reference-models, toy size, random weights) on the
    device: LLaDA in bf16 with confidence="model" reproduces LLaDA's generate() token for token
    (one prompt at a time), the padding probe passes, and Dream's padded rows equal each prompt
    alone."""
    from reference_models import REFERENCE_MODELS, llada_generate, model_dir
    from upo.tasks.text.encoding import encode_prompts
    from upo.text_generation import generate_tokens

    if not (REFERENCE_MODELS / "llada" / "modeling_llada.py").is_file():
        raise SystemExit(f"FAIL: real LLaDA/Dream code not found at {REFERENCE_MODELS}")
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    out = {"dtype": dtype}
    llada = HFDenoiser.from_pretrained(
        str(model_dir("llada", tmp, seed=1)), trust_remote_code=True, dtype=dtype,
        device=device, confidence="model",
    )  # fmt: skip
    prompts = ["what is 2+2?", "hi", "count: 1 2 3 4 5 6 7 8 9"]
    mismatches = 0
    for gen_length, block_length, steps in [(16, 16, 16), (16, 8, 8), (32, 16, 8)]:
        ours = generate_tokens(
            llada, prompts, make_rule("confidence"), gen_length, block_length, steps, batch_size=1
        )
        for prompt, row in zip(prompts, ours):
            ids = encode_prompts(llada.tokenizer, [prompt], gen_length, llada.mask_id)[0]
            ids = torch.from_numpy(ids[:, :-gen_length]).to(device)
            theirs = llada_generate(llada.model, ids, steps, gen_length, block_length)
            mismatches += int(row.tolist() != theirs.cpu().tolist())
    if mismatches or not llada.padding_exact:
        raise SystemExit(
            f"FAIL real LLaDA: {mismatches} decodes differ from generate(); padding probe "
            f"{'passed' if llada.padding_exact else 'failed'} ({llada.padding_gap:.3f})"
        )
    out["llada_generate_conformance"] = "9 of 9 decodes equal"
    out["llada_padding_gap"] = round(llada.padding_gap, 5)
    dream = HFDenoiser.from_pretrained(
        str(model_dir("dream", tmp, seed=1)), trust_remote_code=True, dtype=dtype, device=device
    )
    tokens, attention, _ = encode_prompts(dream.tokenizer, prompts, 8, dream.mask_id)
    batched, _ = dream.forward(
        torch.from_numpy(tokens).to(device), torch.from_numpy(attention).to(device)
    )
    worst = 0.0
    for row, prompt in enumerate(prompts):
        alone_ids = encode_prompts(dream.tokenizer, [prompt], 8, dream.mask_id)[0]
        alone, _ = dream.forward(torch.from_numpy(alone_ids).to(device))
        n = alone.shape[1]
        a, b = batched[row, -n:][1:, : dream.mask_id], alone[0][1:, : dream.mask_id]
        worst = max(worst, float((a.float() - b.float()).abs().max()))
    out["dream_padded_vs_alone_max_logit_diff"] = worst
    if not dream.padding_exact:
        raise SystemExit(f"FAIL real Dream: padding probe failed ({dream.padding_gap:.3f})")
    return out


def toy_pipeline(device) -> dict:
    """scripts/paper_pipeline_toy.sh in its fast form, the policy and evaluations on the device."""
    import os
    import subprocess

    dtype = "bfloat16" if device.type == "cuda" else "float32"
    env = {**os.environ, "FAST": "1", "DEVICE": str(device), "DTYPE": dtype}
    env["UPO"] = str(Path(sys.executable).parent / "upo")
    start = time.perf_counter()
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "paper_pipeline_toy.sh")],
        env={**env, "OUT": str(Path(tempfile.mkdtemp()) / "toy")},
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise SystemExit(f"FAIL toy pipeline: {run.stderr.strip().splitlines()[-1:]}")
    return {"seconds": round(time.perf_counter() - start, 1), "dtype": dtype}


def throughput(device, quick: bool) -> dict:
    """Forward passes and decoded positions per second of a ModernBERT-shaped masked LM."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    big = not quick
    cfg = ModernBertConfig(
        vocab_size=32768,
        hidden_size=1024 if big else 128,
        num_hidden_layers=12 if big else 2,
        num_attention_heads=16 if big else 4,
        intermediate_size=2816 if big else 256,
        max_position_embeddings=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        cls_token_id=2,
        sep_token_id=1,
    )
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = ModernBertForMaskedLM(cfg).to(device=device, dtype=dtype)
    d = HFDenoiser(model, mask_id=32767)
    params = sum(p.numel() for p in model.parameters())
    batch, length, answer = (32, 512, 64) if big else (4, 64, 8)
    tokens = torch.randint(3, 30000, (batch, length), device=device)
    tokens[:, -answer:] = d.mask_id
    d.forward(tokens)  # warm-up
    sync(device)
    reps = 10 if big else 2
    start = time.perf_counter()
    for _ in range(reps):
        d.forward(tokens)
    sync(device)
    fwd = (time.perf_counter() - start) / reps
    start = time.perf_counter()
    traj = unmask(d, tokens, make_rule("confidence"))
    sync(device)
    dec = time.perf_counter() - start
    return {
        "model_parameters": params,
        "dtype": str(dtype).removeprefix("torch."),
        "batch": batch,
        "seq_len": length,
        "forward_ms": round(1000 * fwd, 2),
        "sequences_per_s": round(batch / fwd, 1),
        "decode_positions": answer,
        "decode_seconds": round(dec, 2),
        "decoded_positions_per_s": round(batch * answer / dec, 1),
        "nfe": int(traj.nfe[0]),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="also write the summary JSON here")
    parser.add_argument("--allow-cpu", action="store_true", help="run on CPU when there is no GPU")
    args = parser.parse_args()
    if torch.cuda.is_available():
        device = torch.device("cuda")
        where = torch.cuda.get_device_name(0)
    elif args.allow_cpu:
        device = torch.device("cpu")
        where = "cpu"
    else:
        print("FAIL: no CUDA device (pass --allow-cpu to run the checks on CPU)", file=sys.stderr)
        return 1
    import transformers

    summary = {
        "device": where,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    print(f"device {where}, torch {torch.__version__}, transformers {transformers.__version__}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = save_remote_code_model(tmp / "tiny-llada", "llada")
        d = HFDenoiser.from_pretrained(
            str(model_dir), trust_remote_code=True, dtype="float32", device=device
        )
        summary["parity"] = check_parity(d, device)
        print(f"ok padding parity on {device}: {summary['parity']}")
        answers = generate(d, ["what is 2+2?", "name a colour"], make_rule("confidence"), 16, 8)
        if len(answers) != 2:
            raise SystemExit("FAIL text generation")
        print(f"ok text decoding: {answers}")
        summary["grpo"] = grpo_two_steps(model_dir, device, tmp)
        print(f"ok 2 GRPO steps: {summary['grpo']}")
        summary["real_code"] = real_code_checks(device, tmp)
        print(f"ok real LLaDA/Dream code: {summary['real_code']}")
    summary["toy_pipeline"] = toy_pipeline(device)
    print(f"ok toy paper pipeline: {summary['toy_pipeline']}")
    summary["throughput"] = throughput(device, quick=device.type != "cuda")
    print(f"ok throughput: {summary['throughput']}")
    summary["seconds_total"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
