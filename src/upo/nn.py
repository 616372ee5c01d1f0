"""Neural-network pieces shared by the built-in MDM and the policy network.

Attention is written out in float32, outside autocast: on the CPUs upo targets, SDPA's backward
under bf16 autocast is very slow, and the written-out form is batch-exact for inference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def attention(q, k, v, key_mask):
    """Float32 attention with padded keys excluded. q, k, v: [B, H, L, Dh]; key_mask [B, L]."""
    q, dh = q.float(), q.shape[-1]
    root = math.isqrt(dh)
    if root * root == dh and root & (root - 1) == 0:
        # sqrt(Dh) is a power of two, so scaling q is bit-identical to scaling the scores, and
        # L times less work (the policy's heads, Dh = 16)
        scores = (q / root) @ k.float().transpose(-1, -2)
    else:
        # in place: the same bits without a second L x L tensor (a third off the attention here)
        scores = (q @ k.float().transpose(-1, -2)).div_(math.sqrt(dh))
    if not key_mask.all():  # no padding (the usual case): skip a pass over the score tensor
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1) @ v.float()


def fused_attention(q, k, v, key_mask):
    """The same attention through PyTorch's fused float32 kernel (equal to `attention` up to
    rounding). Its backward is about 1.5x faster on this CPU than autograd through `attention`,
    so training passes use it; under bf16 its backward is very slow here, hence float32."""
    mask = None if key_mask.all() else key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
