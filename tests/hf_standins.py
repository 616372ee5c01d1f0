"""Tiny stand-ins for large text MDMs, built offline from configs (no weights are downloaded).

- `TinyLlada`: LLaDA's calling convention: `model(input_ids, attention_mask=None).logits`, the
  mask token a reserved id named in the config (`mask_token_id`), `d_model` / `n_layers` config
  names, rotary positions, blocks in `model.transformer.blocks`.
- `TinyDream`: Dream's: `model(input_ids, attention_mask, position_ids)` where attention_mask is
  "full" or a [B, 1, L, L] boolean mask, and logit i predicts token i + 1 (shifted).
Both share one core, so with the same weights the adapter must give the same aligned logits.
This file is also copied into temporary model directories as remote code (`auto_map`), to test
loading with trust_remote_code the way LLaDA and Dream load.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class TinyLladaConfig(PretrainedConfig):
    model_type = "llada"

    def __init__(
        self, vocab_size=72, d_model=32, n_layers=2, n_heads=4, mask_token_id=68, **kwargs
    ):
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)


class TinyDreamConfig(PretrainedConfig):
    model_type = "Dream"

    def __init__(
        self,
        vocab_size=72,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        mask_token_id=68,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)


def rotate(x, positions):
    """Rotary position embedding of x [B, H, L, Dh] at integer positions [B, L]."""
    half = x.shape[-1] // 2
    freq = 1.0 / (10000 ** (torch.arange(half, device=x.device).float() / half))
    angle = positions[:, None, :, None].float() * freq
    cos, sin = angle.cos(), angle.sin()
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x, pair_mask, positions):
        b, l, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, l, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, positions), rotate(k, positions)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~pair_mask, float("-inf"))
        att = torch.softmax(scores, dim=-1) @ v  # fully masked (padded) query rows give NaN
        x = x + self.out(att.transpose(1, 2).reshape(b, l, d))
        return x + self.ff(self.norm2(x))


class Core(nn.Module):
    def __init__(self, vocab, d, layers, heads):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids, pair_mask, positions):
        x = self.wte(ids)
        for block in self.blocks:
            x = block(x, pair_mask, positions)
        return self.head(self.ln_f(x))


def sharpen_(module: nn.Module, seed: int) -> None:
    """Unit-scale random weights: confident, context-dependent predictions, so ordering and
    padding mistakes change the decoded tokens."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name or "ln_f" in name:
                continue
            if p.dim() == 2:
                scale = 1.0 if "wte" in name else 1.0 / math.sqrt(p.shape[1])
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        module.head.weight.mul_(3.0)


class TinyLladaModel(PreTrainedModel):
    config_class = TinyLladaConfig

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.transformer = Core(c.vocab_size, c.d_model, c.n_layers, c.n_heads)
        self.post_init()
        sharpen_(self.transformer, 0)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        b, l = input_ids.shape
        keys = (
            torch.ones(b, l, dtype=torch.bool, device=input_ids.device)
            if attention_mask is None
            else attention_mask.bool()
        )
        positions = torch.arange(l, device=input_ids.device).expand(b, l)
        logits = self.transformer(input_ids, keys[:, None, None, :], positions)
        return MaskedLMOutput(logits=logits)


class TinyDreamModel(PreTrainedModel):
    config_class = TinyDreamConfig

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.transformer = Core(
            c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads
        )
        self.post_init()
        sharpen_(self.transformer, 0)

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        b, l = input_ids.shape
        if isinstance(attention_mask, str) or attention_mask is None:
            pair = torch.ones(b, 1, l, l, dtype=torch.bool, device=input_ids.device)
        else:
            pair = attention_mask.bool()
        if position_ids is None:
            position_ids = torch.arange(l, device=input_ids.device).expand(b, l)
        aligned = self.transformer(input_ids, pair, position_ids)
        # Dream's logit i predicts token i + 1: shift the aligned logits left by one.
        return MaskedLMOutput(logits=torch.cat([aligned[:, 1:], aligned[:, -1:]], dim=1))


# A character-level tokenizer: every character is a token, so any text round-trips exactly.
SPECIALS = ["<pad>", "<eos>", "<unk>", "<|eot_id|>"]
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789 +-*/=().,:?<>\n#${}\\_|")
MASK_TOKEN = "<|mdm_mask|>"
STANDIN_VOCAB = 72
STANDIN_MASK = 68
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def make_tokenizer(with_mask: bool = True):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = SPECIALS + CHARS
    tokens += [f"<unused{i}>" for i in range(STANDIN_MASK - len(tokens))]
    tokens += [MASK_TOKEN] + [f"<unused_hi{i}>" for i in range(STANDIN_VOCAB - STANDIN_MASK - 1)]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    special = {"pad_token": "<pad>", "eos_token": "<eos>", "unk_token": "<unk>"}
    if with_mask:
        special["mask_token"] = MASK_TOKEN
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    fast.add_special_tokens({"additional_special_tokens": ["<|eot_id|>"]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_remote_code_model(directory, kind: str = "llada", **config_kwargs):
    """Write a model directory that loads like LLaDA/Dream: config.json with auto_map pointing to
    this file copied in as remote code, random weights, and the character tokenizer."""
    import shutil
    from pathlib import Path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__), directory / "modeling_standin.py")
    if kind == "llada":
        config = TinyLladaConfig(**config_kwargs)
        model = TinyLladaModel(config)
        names = ("TinyLladaConfig", "TinyLladaModel")
    else:
        config = TinyDreamConfig(**config_kwargs)
        model = TinyDreamModel(config)
        names = ("TinyDreamConfig", "TinyDreamModel")
    config.auto_map = {
        "AutoConfig": f"modeling_standin.{names[0]}",
        "AutoModel": f"modeling_standin.{names[1]}",
    }
    model.save_pretrained(directory)
    make_tokenizer().save_pretrained(directory)
    return directory
