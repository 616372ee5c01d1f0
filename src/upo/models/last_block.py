"""A trainable copy of an MDM's last transformer block, for the `mdm-block` policy head.

The UPO paper's policy reads the hidden state that enters the MDM's last block and runs it through
one block of the MDM's own architecture and width (initialised as a copy of that last block), then
a norm of the type the MDM's final norm has. `last_block_trunk(mdm)` builds that trunk for LLaDA and
Dream (through upo's Hugging Face adapter, by their own block classes) and for upo's built-in MDM.

Each architecture calls its block differently, so the trunk keeps the calling convention beside the
copy: LLaDA's block takes an additive attention bias [B, 1, L, L] (finfo.min at padded keys) and
computes its rotary positions itself; Dream's decoder layer takes a boolean [B, 1, L, L] mask, the
positions of the real tokens and the rotary (cos, sin) from the model's rotary module, which is
copied too (it has no weights); the built-in MDM's block takes the key mask. These are the
arguments the models' own forwards pass their blocks, so the copy sees what the original sees.

The copy never shares a tensor with the MDM: the MDM stays frozen while the copy trains.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import UpoError


def _fresh_norm(norm: nn.Module) -> nn.Module:
    """A norm of the same class and size as `norm`, at its initial values (scale 1, shift 0). The
    authors' head builds a new norm of the type of LLaDA's final norm rather than copying the
    trained one; the MLP after it starts random anyway."""
    fresh = copy.deepcopy(norm).float()
    with torch.no_grad():
        for name, p in fresh.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)
            p.requires_grad_(True)  # the MDM's own norm is frozen; this one trains
    return fresh


def _trainable_copy(block: nn.Module) -> nn.Module:
    """A float32 copy of `block` whose parameters train (the MDM's own are frozen, maybe bf16).
    From a 4-bit MDM (load_in_4bit) its Linear layers are dequantized: 4-bit weights take no
    gradient, so the copy starts from the weights the MDM computes with, in float32."""
    from .quantize import dequantized_copy, is_4bit_linear

    if any(is_4bit_linear(m) for m in block.modules()):
        block = dequantized_copy(block)
    copied = copy.deepcopy(block).float()
    for p in copied.parameters():
        p.requires_grad_(True)
    return copied.train()


class LastBlockTrunk(nn.Module):
    """norm(block(x)): x [N, L, D] the hidden state entering the MDM's last block, valid [N, L]
    False at padding. Returns [N, L, D] in the autocast dtype when one is active."""

    def __init__(self, kind: str, block: nn.Module, norm: nn.Module, rotary: nn.Module | None):
        super().__init__()
        self.kind = kind  # "llada", "dream" or "tiny": how the block is called
        self.block = _trainable_copy(block)
        self.norm = _fresh_norm(norm)
        if rotary is not None:  # Dream's rotary embedding (a buffer, no weights)
            self.rotary = copy.deepcopy(rotary).float()

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        padded = not bool(valid.all())
        if self.kind == "llada":
            bias = None
            if padded:
                n, l = valid.shape
                bias = torch.zeros(n, 1, l, l, device=x.device).masked_fill(
                    ~valid[:, None, None, :], torch.finfo(torch.float32).min
                )
            x, _ = self.block(x, attention_bias=bias)
        elif self.kind == "dream":
            n, l = valid.shape
            if padded:
                # the positions Dream's forward gives real tokens (hf.real_positions)
                positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
                mask = valid[:, None, None, :].expand(-1, 1, l, -1)
            else:
                positions = torch.arange(l, device=x.device)[None].expand(n, -1)
                mask = None
            cos_sin = self.rotary(x, positions)
            x = self.block(
                x, attention_mask=mask, position_ids=positions, position_embeddings=cos_sin
            )[0]
        else:
            x = self.block(x, valid)
        return self.norm(x)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mdm_parts(mdm) -> tuple[str, nn.Module, nn.Module, nn.Module | None]:
    """(kind, last block, final norm, rotary module or None) of a Denoiser, or UpoError saying
    which MDMs have them."""
    from .hf import HFDenoiser
    from .tiny import TinyMDM

    if isinstance(mdm, TinyMDM):
        return "tiny", mdm.blocks[-1], mdm.norm, None
    if isinstance(mdm, HFDenoiser):
        model = mdm.model
        if mdm.convention == "llada":
            transformer = getattr(getattr(model, "model", model), "transformer", None)
            norm = None if transformer is None else transformer["ln_f"]
            if norm is None or getattr(model.config, "block_group_size", 1) != 1:
                raise UpoError(
                    f"{mdm.name}: policy.arch mdm-block: no final norm (transformer.ln_f) or "
                    "grouped blocks in this LLaDA"
                )
            return "llada", mdm.last_layer(), norm, None
        if mdm.convention == "dream":
            base = getattr(model, "model", None)
            norm, rotary = getattr(base, "norm", None), getattr(base, "rotary_emb", None)
            if norm is None or rotary is None:
                raise UpoError(
                    f"{mdm.name}: policy.arch mdm-block: no final norm or rotary embedding "
                    "(model.norm, model.rotary_emb) in this Dream"
                )
            return "dream", mdm.last_layer(), norm, rotary
    name = getattr(mdm, "name", type(mdm).__name__)
    raise UpoError(
        f"{name}: policy.arch mdm-block copies the MDM's last block, which upo can call for "
        "LLaDA, Dream and its own MDMs only; use policy.arch: upo"
    )


def last_block_trunk(mdm) -> LastBlockTrunk:
    """The trunk of an `mdm-block` head for `mdm`: its last block copied, its final norm's type."""
    kind, block, norm, rotary = mdm_parts(mdm)
    return LastBlockTrunk(kind, block, norm, rotary)
