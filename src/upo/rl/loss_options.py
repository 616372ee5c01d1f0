"""The loss choices where upo and the UPO authors' released code (github chunsanHong/UPO) differ,
as plain functions that `grpo.update` calls; each UPOConfig default keeps upo's behaviour.

- `advantages`: r - mean over the group, optionally divided by the group's (unbiased) std plus an
  epsilon; the authors' (TRL's) rule adds 1e-4 and sets a group whose std is exactly 0 to 0.
- `policy_ratio`: exp(new - old), with the log-ratio optionally clamped first (authors: +-10),
  so that one runaway step cannot overflow the ratio.
- `tied_top` / `ce_to_ties`: the cross-entropy target of the max-confidence reference spread
  uniformly over every allowed position whose top-1 probability, rounded to the MDM's dtype, ties
  with the largest (authors), instead of upo's one-hot on the float32 argmax.
"""

from __future__ import annotations

import torch


def advantages(
    rewards: torch.Tensor, group_size: int, scale: bool, eps: float, zero_flat: bool
) -> torch.Tensor:
    """[B] A = r - mean over the group of samples of the same prompt; with `scale`, divided by
    (group std + eps), and with `zero_flat` a group whose std is exactly 0 gets 0. Flat groups
    matter because r - mean need not be 0 there: the mean of equal floats can round."""
    r = rewards.view(-1, group_size)
    adv = r - r.mean(1, keepdim=True)
    if scale:
        std = r.std(1, keepdim=True)
        adv = adv / (std + eps)
        if zero_flat:
            adv = adv * (std != 0)
    return adv.reshape(-1)


def policy_ratio(new: torch.Tensor, old: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """exp(new - old), the log-ratio clamped to [-clamp, clamp] first when `clamp` is set."""
    log_ratio = new - old
    if clamp is not None:
        log_ratio = log_ratio.clamp(-clamp, clamp)
    return torch.exp(log_ratio)


def tied_top(top1: torch.Tensor, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[N, L] bool: the allowed positions whose top-1 token probability `top1` [N, L], rounded to
    `dtype`, equals the largest such value in its row. In bf16 every probability above ~0.998
    rounds to 1.0, so a confident model ties many positions."""
    rounded = top1.to(dtype).float().masked_fill(~allowed, -1.0)
    return (rounded == rounded.max(1, keepdim=True).values) & allowed


def ce_to_ties(logp_all: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """[N] cross-entropy from the uniform distribution over `ties` to the policy's log-probs
    `logp_all` [N, L] (-inf off the allowed positions, which `ties` never includes)."""
    picked = torch.where(ties, logp_all, torch.zeros_like(logp_all))
    return -picked.sum(1) / ties.sum(1).clamp(min=1)


TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def mdm_torch_dtype(dtype_used: str | None) -> torch.dtype:
    """The torch dtype of an MDM's recorded arithmetic (`Denoiser.dtype_used`); float32 when the
    model does not say."""
    return TORCH_DTYPES.get(dtype_used or "float32", torch.float32)
