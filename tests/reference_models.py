"""The real LLaDA and Dream model code at toy size, from ../shared/reference-models (read-only,
never copied into the project). Tests that use it skip, saying why, when it is absent (a user's
clone); CI has it.

`model_dir(kind, dest)` writes a loadable model directory as a user's snapshot looks: the
reference folder's files (config, the model's own Python, tokenizer, chat template) plus random
weights saved by `save_pretrained`. Nothing in the model code is patched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

REFERENCE_MODELS = Path(__file__).resolve().parents[2] / "shared" / "reference-models"
KINDS = ("llada", "dream")
MASK_ID = 68  # the toy configs' mask_token_id


def require_reference_models() -> Path:
    import pytest  # here, so that scripts/gpu_smoke.py can use this module without pytest

    if not (REFERENCE_MODELS / "llada" / "modeling_llada.py").is_file():
        pytest.skip(f"real LLaDA/Dream code not found at {REFERENCE_MODELS} (a user's clone)")
    return REFERENCE_MODELS


def output_head(model) -> torch.nn.Linear:
    """The token-logit layer: LLaDA's transformer.ff_out, Dream's lm_head."""
    head = model.get_output_embeddings()
    if head is None:  # LLaDA's code does not implement get_output_embeddings
        head = model.model.transformer.ff_out
    return head


def sharpen(model, seed: int, logit_scale: float = 10.0) -> None:
    """Random weights that make confident, context-dependent predictions, like a trained model
    and unlike the near-uniform logits of a fresh init (where float32 ties would decide orders).

    The mask token's output row is zeroed: its logit is 0 while the others spread with standard
    deviation `logit_scale`, so, as in a trained LLaDA or Dream (which never see [MASK] as a
    target), the mask token is practically never the likeliest token."""
    gen = torch.Generator().manual_seed(seed)
    head = output_head(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() != 2:
                continue
            if p is head.weight:
                scale = logit_scale * p.shape[1] ** -0.5
            elif "wte" in name or "embed_tokens" in name:
                scale = 1.0
            else:
                scale = 1.5 * p.shape[1] ** -0.5
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
        head.weight[MASK_ID] = 0.0


def model_dir(kind: str, dest: Path, seed: int = 0, sharp: bool = True) -> Path:
    """A model directory of `kind` ("llada" or "dream") with random weights, under `dest`."""
    import transformers

    source = require_reference_models() / kind
    out = Path(dest) / kind
    out.mkdir(parents=True, exist_ok=True)
    config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=True)
    torch.manual_seed(seed)
    model = transformers.AutoModel.from_config(config, trust_remote_code=True)
    if sharp:
        sharpen(model, seed)
    model.save_pretrained(out)
    for f in source.iterdir():  # the model's own code, tokenizer and templates, as shipped
        if f.is_file() and not (out / f.name).exists():
            shutil.copy(f, out / f.name)
    return out


def transfer_counts(n_masked: int, steps: int) -> list[int]:
    """LLaDA's per-step token counts within a block: n // steps each, the remainder going one
    apiece to the first steps."""
    base, extra = divmod(n_masked, steps)
    return [base + (i < extra) for i in range(steps)]


@torch.no_grad()
def llada_generate(model, prompt, steps, gen_length, block_length, softmax_dtype=None):
    """LLaDA's published generate() (GSAI-ML/LLaDA generate.py), written here from the
    algorithm: temperature 0, no classifier-free guidance, low_confidence remasking.

    Each of gen_length / block_length blocks gets steps / n_blocks steps; a step runs the model
    on the whole sequence, takes every position's argmax token over the FULL vocabulary (the
    mask token included: LLaDA does not suppress its logit) and its softmax probability (in the
    logits' dtype, or `softmax_dtype`: the older generate.py used float64), sets the confidence
    of unmasked positions and of positions after the current block to -inf, and reveals the
    top-k, k from `transfer_counts`."""
    x = torch.full(
        (1, prompt.shape[1] + gen_length), MASK_ID, dtype=torch.long, device=prompt.device
    )
    x[:, : prompt.shape[1]] = prompt
    assert gen_length % block_length == 0
    n_blocks = gen_length // block_length
    assert steps % n_blocks == 0
    per_block = steps // n_blocks
    for b in range(n_blocks):
        start = prompt.shape[1] + b * block_length
        counts = transfer_counts(
            int((x[0, start : start + block_length] == MASK_ID).sum()), per_block
        )
        for count in counts:
            masked = x == MASK_ID
            logits = model(x).logits
            x0 = logits.argmax(-1)
            p = F.softmax(logits if softmax_dtype is None else logits.to(softmax_dtype), dim=-1)
            x0_p = p.gather(-1, x0[..., None]).squeeze(-1)
            x0_p[:, start + block_length :] = -float("inf")
            x0 = torch.where(masked, x0, x)
            confidence = torch.where(masked, x0_p, torch.full_like(x0_p, -float("inf")))
            chosen = torch.topk(confidence[0], k=count).indices
            x[0, chosen] = x0[0, chosen]
    return x[0, prompt.shape[1] :]
