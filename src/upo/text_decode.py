"""Text generation with an MDM: prompt + gen_length masks, decoded by the common `unmask` loop.

Prompts are left-padded, so every item's answer region is the last gen_length positions and
semi-autoregressive blocks line up across the batch. The answer is the text before the first
EOS / end-of-turn token (an MDM fills the whole region; what follows the first EOS is padding).
Decoding runs on the MDM's device with a generator there, so on a GPU nothing crosses to the CPU
until the final tokens.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .errors import UpoError
from .evaluate import PolicyResult, decode_in_batches, policy_result
from .policies.base import Policy
from .tasks.base import Batch


def prompt_ids(tokenizer, prompt: str, chat: bool = True, system: str | None = None) -> list[int]:
    """Token ids of one prompt, through the tokenizer's chat template when it has one."""
    if chat and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def encode_prompts(
    tokenizer,
    prompts: list[str],
    gen_length: int,
    mask_id: int,
    chat: bool = True,
    system: str | None = None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(tokens [B, L], attention_mask [B, L], prompt lengths): left padding, then gen_length
    mask tokens per item."""
    if gen_length < 1:
        raise UpoError(f"gen_length must be at least 1, got {gen_length}")
    ids = [prompt_ids(tokenizer, p, chat, system) for p in prompts]
    longest = max((len(i) for i in ids), default=0)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    length = longest + gen_length
    tokens = np.full((len(ids), length), pad, dtype=np.int64)
    attention = np.zeros((len(ids), length), dtype=bool)
    for row, seq in enumerate(ids):
        start = longest - len(seq)
        tokens[row, start:longest] = seq
        tokens[row, longest:] = mask_id
        attention[row, start:] = True
    return tokens, attention, [len(i) for i in ids]


def answer_text(tokenizer, ids, eos_ids) -> str:
    """Decoded answer tokens up to (not including) the first EOS / end-of-turn token."""
    ids = [int(i) for i in ids]
    stops = set(eos_ids)
    for i, t in enumerate(ids):
        if t in stops:
            ids = ids[:i]
            break
    return tokenizer.decode(ids, skip_special_tokens=True)


def steps_to_k(gen_length: int, steps: int | None, k: int, block_length: int | None = None) -> int:
    """Positions revealed per step: gen_length / steps when steps is given (LLaDA's `steps`).
    As in LLaDA's generate(), steps are shared out evenly over the blocks; and with steps
    dividing gen_length every step of a block reveals the same number of positions (LLaDA's
    schedule then equals upo's fixed k; uneven schedules are refused, not approximated)."""
    if steps is None:
        return k
    if steps < 1 or gen_length % steps:
        raise UpoError(f"steps {steps} must divide gen_length {gen_length}")
    n_blocks = gen_length // block_length if block_length else 1
    if steps % n_blocks:
        raise UpoError(
            f"steps {steps} must be a multiple of the {n_blocks} blocks "
            f"(gen_length {gen_length} / block_length {block_length}), as in LLaDA's generate()"
        )
    return gen_length // steps


def evaluate_text(
    denoiser,
    task,
    batch: Batch,
    policy: Policy,
    batch_size: int = 8,
    k: int = 1,
    seed: int = 0,
    progress=None,
) -> PolicyResult:
    """`upo.evaluate.evaluate_policy` for text tasks: the same result record, decoded on the
    MDM's device with the task's semi-autoregressive blocks."""
    start = time.perf_counter()
    outputs, order, nfe, _ = decode_in_batches(
        denoiser,
        batch,
        policy,
        batch_size,
        k,
        seed,
        progress=progress,
        block_size=task.block_length,
    )
    seconds = time.perf_counter() - start
    solved = task.solved(batch, outputs)
    cell = task.cell_acc(batch, outputs)
    return policy_result(policy.name, solved, cell, outputs, order, nfe, seconds)


def generate(
    denoiser,
    prompts: list[str],
    policy: Policy,
    gen_length: int = 128,
    block_length: int | None = 32,
    steps: int | None = None,
    k: int = 1,
    chat: bool = True,
    system: str | None = None,
    batch_size: int = 8,
    seed: int = 0,
    token_temperature: float = 0.0,
) -> list[str]:
    """Answers to `prompts`, one string each (text before the first EOS)."""
    answers = generate_tokens(
        denoiser, prompts, policy, gen_length, block_length, steps, k, chat, system,
        batch_size, seed, token_temperature,
    )  # fmt: skip
    eos = getattr(denoiser, "eos_ids", [])
    return [answer_text(denoiser.tokenizer, row, eos) for row in answers]


def generate_tokens(
    denoiser,
    prompts: list[str],
    policy: Policy,
    gen_length: int = 128,
    block_length: int | None = 32,
    steps: int | None = None,
    k: int = 1,
    chat: bool = True,
    system: str | None = None,
    batch_size: int = 8,
    seed: int = 0,
    token_temperature: float = 0.0,
) -> np.ndarray:
    """[N, gen_length] answer tokens for `prompts`. With `steps`, gen_length / steps positions are
    revealed per step, as LLaDA's generate(steps=...) does; block_length gives its
    semi-autoregressive blocks."""
    tokenizer = getattr(denoiser, "tokenizer", None)
    if tokenizer is None:
        raise UpoError("text generation needs an MDM with a tokenizer")
    if block_length is not None and (block_length < 1 or gen_length % block_length):
        raise UpoError(f"block_length {block_length} must divide gen_length {gen_length}")
    tokens, attention, _ = encode_prompts(
        tokenizer, prompts, gen_length, denoiser.mask_id, chat, system
    )
    batch = Batch(tokens, np.full_like(tokens, -1), attention)
    outputs, _, _, _ = decode_in_batches(
        denoiser,
        batch,
        policy,
        batch_size,
        steps_to_k(gen_length, steps, k, block_length),
        seed,
        token_temperature,
        block_size=block_length,
    )
    return outputs[:, -gen_length:]


def run_text_eval(argv: list[str] | None = None) -> int:
    """`python -m upo.text_decode`: `upo eval` for text tasks on a Hugging Face MDM (which
    `upo eval --task TEXT_TASK --mdm hf:...` also runs)."""
    from .cli import _Parser, run_guarded
    from .cli_eval import add_hf_arguments
    from .tasks.registry import TEXT_TASK_NAMES

    p = _Parser(prog="python -m upo.text_decode", description=run_text_eval.__doc__)
    p.add_argument("--task", required=True, choices=TEXT_TASK_NAMES)
    p.add_argument("--mdm", required=True, help="hf:HUB_ID, hf:DIR or a transformers directory")
    p.add_argument("--data", required=True, help="JSONL / JSON / Parquet / CSV, or hf:NAME:SPLIT")
    p.add_argument("--policies", default="confidence,random")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--k", type=int, default=1, help="positions revealed per step")
    p.add_argument("--n", type=int)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write results as JSON (the `upo eval --json` format)")
    add_hf_arguments(p)
    return run_guarded(text_eval, p.parse_args(argv))


def text_eval(args) -> int:
    """Evaluate policies on a text task; `args` holds the flags of `run_text_eval`."""
    import sys

    from tqdm import tqdm

    from .evaluate import markdown_table
    from .io_utils import check_file_target, write_json
    from .models.registry import load_mdm
    from .policies.resolve import resolve_policy
    from .tasks.registry import get_task

    check_file_target(args.json)
    options = {}
    if args.gen_length is not None:
        options["gen_length"] = args.gen_length
    if args.block_length is not None:
        options["block_length"] = args.block_length or None
    if args.no_chat:
        options["chat"] = False
    if args.instructions is not None:
        options["instructions"] = args.instructions
    mdm_options = {
        "trust_remote_code": args.trust_remote_code,
        "dtype": args.dtype or "auto",
        "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "mask_id": args.mask_id,
        "confidence": args.confidence or "float32",
        "allow_unpadded_batching": bool(args.allow_unpadded_batching),
    }
    mdm = load_mdm(args.mdm, options=mdm_options)
    task = get_task(args.task, options).bind(mdm)
    if (args.n is not None and args.n < 1) or args.batch_size < 1 or args.k < 1:
        raise UpoError("--n, --batch-size and --k must be at least 1")
    batch = task.load(args.data, n=args.n)
    results = []
    for name in [s.strip() for s in args.policies.split(",") if s.strip()]:
        policy = resolve_policy(name, mdm)
        if hasattr(policy, "net"):
            policy.net.to(mdm.device)
        with tqdm(total=len(batch), desc=f"eval {policy.name}", file=sys.stderr) as bar:
            res = evaluate_text(
                mdm, task, batch, policy, args.batch_size, args.k, args.seed, bar.update
            )
        results.append(res)
        for text in task.answers(batch, res.outputs)[: args.show]:
            print(f"--- {policy.name}: {text!r}")
    print(f"\n{task.name}, {len(batch)} items, MDM {args.mdm}\n")
    print(markdown_table(results))
    if args.json:
        write_json(
            args.json,
            {
                "task": task.name,
                "n": len(batch),
                "mdm": args.mdm,
                "data": args.data,
                "k": args.k,
                "seed": args.seed,
                "gen_length": task.gen_length,
                "block_length": task.block_length,
                "results": [r.summary() for r in results],
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_text_eval())
