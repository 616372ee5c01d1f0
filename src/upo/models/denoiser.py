"""The Denoiser protocol: the seam between models and decoding, policies, training and evaluation."""

from __future__ import annotations

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
