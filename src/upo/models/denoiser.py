"""The Denoiser protocol: the seam between models and decoding, policies, training and evaluation."""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """A frozen masked diffusion model as the rest of upo sees it.

    forward(tokens [B, L] long, attention_mask [B, L] bool, True = real token) returns
    (logits [B, L, V] float32, features [B, L, D]): the features are the hidden states entering
    the model's last block, produced by the same forward pass. The mask token never wins:
    its logit is -inf.

    Besides the sizes, callers read:
    - device: where its inputs go;
    - seq_len: the one sequence length it takes (upo's own MDM), None when any length goes;
    - pads_batches: whether left-padded prompts of different lengths may share a forward, i.e.
      padding leaves each row's logits unchanged (or the user accepted that it does not);
    - dtype_used / dtype_note: the arithmetic it runs in and why, recorded with every result;
    - softmax_dtype / topk_ties: how decoding computes confidences and breaks ties (None / False:
      upo's float32 softmax, ties to the lowest position, independent of the batch);
    - tokenizer / eos_ids: text MDMs only (None / [] otherwise).

    Optional, for block-wise key/value caching (upo/cache.py): `cache_refusal()` (None, or why
    the model cannot be cached) and `forward_cached(tokens, attention_mask, store)`.
    """

    mask_id: int
    vocab_size: int
    feature_dim: int
    device: torch.device
    seq_len: int | None
    pads_batches: bool
    dtype_used: str
    dtype_note: str
    softmax_dtype: torch.dtype | None
    topk_ties: bool
    tokenizer: Any
    eos_ids: list[int]

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def fingerprint(self) -> str: ...


class TimedDenoiser:
    """A Denoiser that also counts its forward calls, the sequences they ran and the seconds
    they took: how benchmarks report the MDM's share of wall time."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser
        self.seconds = 0.0
        self.calls = 0
        self.rows = 0

    def __getattr__(self, name: str):
        # every other protocol attribute is the wrapped model's
        return getattr(self.denoiser, name)

    def forward(self, tokens, attention_mask):
        start = time.perf_counter()
        out = self.denoiser.forward(tokens, attention_mask)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.rows += tokens.shape[0]
        return out

    def forward_cached(self, tokens, attention_mask, store):
        # the block-wise cache's forward (upo/cache.py), timed like forward
        start = time.perf_counter()
        out = self.denoiser.forward_cached(tokens, attention_mask, store)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.rows += tokens.shape[0]
        return out

    def fingerprint(self) -> str:
        return self.denoiser.fingerprint()
