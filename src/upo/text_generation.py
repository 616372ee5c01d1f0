"""Text generation with a Hugging Face MDM, in the argument style of LLaDA's generate(): prompts
in, answers out. A thin layer over `upo.generate` (upo/api.py), which left-pads the prompts
(tasks/text/encoding.py) so semi-autoregressive blocks line up across the batch and decodes on the
MDM's device through the common `unmask` loop.
"""

from __future__ import annotations

import numpy as np

from .api import generate as generate_any
from .api import steps_to_k
from .models.denoiser import Denoiser
from .policies.base import Policy

__all__ = ["generate", "generate_tokens", "steps_to_k"]


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
    cache: str = "none",
) -> list[str]:
    """Answers to `prompts`, one string each (text before the first EOS)."""
    return _decode(**locals()).texts


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
    cache: str = "none",
) -> np.ndarray:
    """[N, gen_length] answer tokens for `prompts`. With `steps`, gen_length / steps positions are
    revealed per step, as LLaDA's generate(steps=...) does; block_length gives its
    semi-autoregressive blocks. `cache`: "none", "prefix" or "dual" (see upo.generate)."""
    return _decode(**locals()).tokens


def _decode(denoiser, prompts, policy, steps, k, **settings):
    # steps decides the positions per step when given; upo.generate takes one of the two
    return generate_any(
        denoiser,
        list(prompts),
        policy=policy,
        steps=steps,
        k=None if steps is not None else k,
        **settings,
    )
