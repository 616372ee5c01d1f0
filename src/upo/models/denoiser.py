"""The Denoiser protocol: the seam between models and decoding, policies, training and evaluation."""

from __future__ import annotations

import time
from typing import Protocol

import torch


class Denoiser(Protocol):
    """A frozen masked diffusion model as the rest of upo sees it.

    forward(tokens [B, L] long, attention_mask [B, L] bool, True = real token) returns
    (logits [B, L, V] float32, features [B, L, D]): the features are the hidden states entering
    the model's last block, produced by the same forward pass. The mask token never wins:
    its logit is -inf.
    """

    mask_id: int
    vocab_size: int
    feature_dim: int

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def fingerprint(self) -> str: ...


class TimedDenoiser:
    """A Denoiser that also counts its forward calls, the sequences they ran and the seconds
    they took: how benchmarks report the MDM's share of wall time."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.mask_id = denoiser.mask_id
        self.vocab_size = denoiser.vocab_size
        self.feature_dim = denoiser.feature_dim
        self.seconds = 0.0
        self.calls = 0
        self.rows = 0

    def forward(self, tokens, attention_mask):
        start = time.perf_counter()
        out = self.denoiser.forward(tokens, attention_mask)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.rows += tokens.shape[0]
        return out

    def fingerprint(self) -> str:
        return self.denoiser.fingerprint()
