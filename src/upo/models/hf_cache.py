"""Block-wise key/value caching (upo/cache.py) for LLaDA and Dream, through their own code.

- Dream's layers take a transformers-style cache object (`past_key_values`, whose `update` gets
  each layer's rotated keys and values and returns the ones to attend to), so the KVStore is
  passed as that object and queries carry their own `position_ids`: nothing is patched.
- LLaDA's model refuses a cache ("The kvcache is not supported for MDM") and its attention can
  only append past keys in front of the new ones, with rotary positions counted from there. For
  the duration of one forward, upo replaces each block's `attention` method with one that
  records the keys/values (a refresh: LLaDA's own attention, unchanged, asked for its keys and
  values) or attends from the query positions to the stored keys/values, rotating queries and
  keys at their true positions with the block's own rotary embedding. Projections, norms, MLPs,
  the output head: the model's own code, called as usual.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch
from torch import nn


def layer_stack(model: nn.Module, n_layers: int | None) -> nn.ModuleList | None:
    """The ModuleList of the model's layers (as many as the config says), or None."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    exact = [m for m in lists if n_layers is not None and len(m) == n_layers]
    return exact[0] if exact else None


def llada_refusal(model: nn.Module, n_layers: int | None) -> str | None:
    config = getattr(model, "config", None)
    if config is not None and (
        getattr(config, "alibi", False) or not getattr(config, "rope", True)
    ):
        return "this LLaDA uses ALiBi or no rotary positions, which upo's cache does not handle"
    stack = layer_stack(model, n_layers)
    needed = ("attention", "rotary_emb", "attn_out", "_scaled_dot_product_attention", "config")
    if stack is None or not all(hasattr(block, n) for block in stack for n in needed):
        return "this LLaDA code has no per-layer rotary attention that upo knows how to cache"
    return None


def dream_refusal(model: nn.Module) -> str | None:
    params = inspect.signature(model.forward).parameters
    if not {"past_key_values", "position_ids", "cache_position"} <= set(params):
        return "this Dream code takes no past_key_values/position_ids, so it cannot be cached"
    return None


@contextmanager
def llada_cached_attention(model: nn.Module, n_layers: int | None, store, key_bias):
    """Inside: every block of `model` attends through `store` (see the module docstring).
    `key_bias` [R, 1, 1, L] float (0, or the dtype's minimum at padded keys) or None."""
    stack = layer_stack(model, n_layers)
    for i, block in enumerate(stack):
        block.attention = _attention(block, i, store, key_bias)  # an instance attribute
    try:
        yield
    finally:
        for block in stack:
            del block.attention  # back to the class's method


def _attention(block, layer: int, store, key_bias):
    original = type(block).attention.__get__(block)

    def attention(q, k, v, attention_bias=None, layer_past=None, use_cache=False):
        if store.query is None:
            # a refresh: LLaDA's own attention, which hands back its (unrotated) keys and values
            out, present = original(q, k, v, attention_bias, layer_past=None, use_cache=True)
            store.update(*present, layer)
            return out, None
        return _attend_from_queries(block, layer, store, key_bias, q, k, v)

    return attention


def _attend_from_queries(block, layer, store, key_bias, q, k, v):
    """LLaDA's attention for the query positions only, against the whole stored sequence."""
    config = block.config
    b, t, c = q.shape
    dtype = k.dtype
    if getattr(block, "q_norm", None) is not None and getattr(block, "k_norm", None) is not None:
        q = block.q_norm(q).to(dtype=dtype)
        k = block.k_norm(k).to(dtype=dtype)
    hs = c // config.n_heads
    q = q.view(b, t, config.n_heads, hs).transpose(1, 2)
    k = k.view(b, t, config.effective_n_kv_heads, hs).transpose(1, 2)
    v = v.view(b, t, config.effective_n_kv_heads, hs).transpose(1, 2)
    k, v = store.update(k, v, layer)  # [B, n_kv, L, hs], keys unrotated as LLaDA keeps them
    rope = block.rotary_emb
    q_, k_ = (q.float(), k.float()) if config.rope_full_precision else (q, k)
    with torch.autocast(q.device.type, enabled=False):
        sin, cos = rope.get_rotary_embedding(k_.shape[-2], q_.device)
        sin, cos = sin.type_as(q_), cos.type_as(q_)
        at = store.query[:, None, :, None].expand(-1, 1, -1, sin.shape[-1])
        q_sin = sin.expand(b, -1, -1, -1).gather(2, at)
        q_cos = cos.expand(b, -1, -1, -1).gather(2, at)
        q_ = rope.apply_rotary_pos_emb(q_sin, q_cos, q_)
        k_ = rope.apply_rotary_pos_emb(sin, cos, k_)
    q, k = q_.type_as(q), k_.type_as(k)
    bias = None if key_bias is None else block._cast_attn_bias(key_bias, dtype)
    att = block._scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=0.0)
    att = att.transpose(1, 2).contiguous().view(b, t, c)
    return block.attn_out(att), None


def llada_key_bias(mask: torch.Tensor) -> torch.Tensor | None:
    """[R, 1, 1, L] additive padding bias as LLaDA builds it from an attention mask (the float32
    minimum at padded keys), or None without padding."""
    if bool(mask.all()):
        return None
    bias = (1.0 - mask.float()) * torch.finfo(torch.float32).min
    return bias[:, None, None, :]


def dream_query_window(query: torch.Tensor) -> torch.Tensor:
    """Dream's logit i - 1 predicts token i: the queries gain the position before their first,
    so every recomputed position's logits are fresh too."""
    return torch.cat([(query[:, :1] - 1).clamp_min(0), query], dim=1)
