"""Text generation with a Hugging Face MDM: prompt + gen_length masks, decoded by the common
`unmask` loop (through decode_in_batches) with any policy.

Prompts are left-padded (tasks/text/encoding.py), so semi-autoregressive blocks line up across the
batch. Decoding runs on the MDM's device with a generator there, so on a GPU nothing crosses to
the CPU until the final tokens.
"""

from __future__ import annotations

import numpy as np

from .errors import UpoError
from .evaluate import decode_in_batches
from .models.denoiser import Denoiser
from .policies.base import Policy
from .tasks.base import Batch
from .tasks.text.encoding import answer_text, encode_prompts


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


def generate(
    denoiser: Denoiser,
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
    eos = denoiser.eos_ids
    return [answer_text(denoiser.tokenizer, row, eos) for row in answers]


def generate_tokens(
    denoiser: Denoiser,
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
    tokenizer = denoiser.tokenizer
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
