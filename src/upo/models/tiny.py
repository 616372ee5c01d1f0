"""The built-in small MDM: a bidirectional pre-norm transformer that trains on a laptop CPU.

Positions: every position has a learned absolute embedding. For Sudoku grids the row, column and
box embeddings are added, so the model is told the geometry instead of having to discover it from
81 unrelated positions. Other tasks can tell their structure the same way with `position_groups`:
each is a per-position id list (e.g. the place value of a digit in an addition, the house of a Zebra
cell) whose learned embedding is added, so positions that belong together start out alike. Attention is written out and runs in float32
outside autocast: on this CPU, SDPA's backward under bf16 autocast is very slow.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import attention


@dataclass
class TinyConfig:
    vocab_size: int
    mask_id: int
    seq_len: int
    d_model: int = 192
    n_layers: int = 6
    n_heads: int = 6
    ff_mult: int = 4
    grid_box: list[int] | None = None  # [box_rows, box_cols] for Sudoku-like grids
    # Extra per-position ids, one list of seq_len ints per group, each with its own embedding.
    position_groups: list[list[int]] | None = None
    # Extra token ids per position (-1 = none) whose *token* embeddings are added: ties a position
    # to the prompt tokens that name it (a Zebra cell gets its attribute and house tokens), so
    # matching a clue to the cell it is about starts from identical vectors.
    position_tokens: list[list[int]] | None = None
    # [slot ids, field ids], one int per position each (slot -1 = none): positions sharing a slot
    # (the five tokens of a Zebra clue) each also get the sum of field-specific embeddings of the
    # whole slot, so every token of a clue carries the clue itself. Without it, using a clue takes
    # two attention hops (gather the clue, then match it to a cell) and a first Zebra MDM never
    # learned to use its clues.
    token_slots: list[list[int]] | None = None
    bf16: bool = True

    def validate(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {self.vocab_size}")
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(f"mask_id {self.mask_id} is outside the vocabulary")
        if self.seq_len < 1 or self.d_model < 1 or self.n_layers < 2 or self.n_heads < 1:
            raise ValueError("seq_len, d_model, n_heads must be positive and n_layers >= 2")
        if self.ff_mult < 1:
            # the feed-forward width is ff_mult * d_model: zero or negative has no layer to build
            raise ValueError(f"ff_mult must be at least 1, got {self.ff_mult}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.grid_box is not None:
            r, c = self.grid_box
            if (r * c) ** 2 != self.seq_len:
                raise ValueError(f"grid_box {self.grid_box} does not match seq_len {self.seq_len}")
        for k, ids in enumerate(self.position_groups or []):
            if len(ids) != self.seq_len or min(ids) < 0:
                raise ValueError(
                    f"position_groups[{k}] needs {self.seq_len} non-negative ids, got {len(ids)}"
                )
        for k, ids in enumerate(self.position_tokens or []):
            if len(ids) != self.seq_len or not all(-1 <= t < self.vocab_size for t in ids):
                raise ValueError(
                    f"position_tokens[{k}] needs {self.seq_len} token ids (or -1), got {len(ids)}"
                )
        if self.token_slots is not None:
            ok = len(self.token_slots) == 2 and all(
                len(ids) == self.seq_len for ids in self.token_slots
            )
            if not ok or min(self.token_slots[0]) < -1 or min(self.token_slots[1]) < 0:
                raise ValueError(
                    f"token_slots needs two lists of {self.seq_len} ids: slots (-1 = none) and fields"
                )


class Block(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ff_mult * cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.ff_mult * cfg.d_model, cfg.d_model),
        )

    def forward(self, x, key_mask, kv=None, layer: int = 0):
        """`kv` (a cache.KVStore): keys/values of the whole sequence for the positions of x."""
        b, l, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, l, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if kv is not None:
            k, v = kv.update(k, v, layer)
        with torch.autocast(device_type=x.device.type, enabled=False):
            att = attention(q, k, v, key_mask)
        att = att.transpose(1, 2).reshape(b, l, d).to(x.dtype)
        x = x + self.proj(att)
        return x + self.ff(self.norm2(x))


class TinyMDM(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.mask_id = cfg.mask_id
        self.vocab_size = cfg.vocab_size
        self.feature_dim = cfg.d_model
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.seq_len, cfg.d_model)
        if cfg.grid_box is not None:
            r, c = cfg.grid_box
            n = r * c
            cell = torch.arange(cfg.seq_len)
            row, col = cell // n, cell % n
            self.register_buffer("row_idx", row, persistent=False)
            self.register_buffer("col_idx", col, persistent=False)
            self.register_buffer("box_idx", (row // r) * r + col // c, persistent=False)
            self.row = nn.Embedding(n, cfg.d_model)
            self.col = nn.Embedding(n, cfg.d_model)
            self.box = nn.Embedding(n, cfg.d_model)
        if cfg.position_groups:
            ids = torch.tensor(cfg.position_groups, dtype=torch.long)  # [G, L]
            self.register_buffer("group_idx", ids, persistent=False)
            self.groups = nn.ModuleList(
                nn.Embedding(int(row.max()) + 1, cfg.d_model) for row in ids
            )
        if cfg.position_tokens:
            ids = torch.tensor(cfg.position_tokens, dtype=torch.long)  # [T, L]
            self.register_buffer("pos_token_idx", ids, persistent=False)
        if cfg.token_slots:
            slot, field = (torch.tensor(ids, dtype=torch.long) for ids in cfg.token_slots)
            self.register_buffer("slot_idx", slot.clamp_min(0), persistent=False)
            self.register_buffer("slot_on", slot >= 0, persistent=False)
            self.register_buffer("slot_field", field, persistent=False)
            self.n_slots = int(slot.max()) + 1
            self.slot_tok = nn.Embedding((int(field.max()) + 1) * cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, tokens):
        l = tokens.shape[1]
        x = self.tok(tokens) + self.pos.weight[:l]
        if self.cfg.grid_box is not None:
            x = (
                x
                + self.row(self.row_idx[:l])
                + self.col(self.col_idx[:l])
                + self.box(self.box_idx[:l])
            )
        if self.cfg.position_groups:
            for emb, ids in zip(self.groups, self.group_idx):
                x = x + emb(ids[:l])
        if self.cfg.position_tokens:
            for ids in self.pos_token_idx:
                ids = ids[:l]
                x = x + self.tok(ids.clamp_min(0)) * (ids >= 0)[:, None]
        if self.cfg.token_slots:
            x = x + self.slot_sums(tokens)
        return x

    def slot_sums(self, tokens):
        """[B, L, D]: at each slotted position, the sum of its slot's field-token embeddings."""
        l = tokens.shape[1]
        slot, on = self.slot_idx[:l], self.slot_on[:l, None]
        parts = self.slot_tok(self.slot_field[:l] * self.vocab_size + tokens) * on
        sums = parts.new_zeros(tokens.shape[0], self.n_slots, parts.shape[-1])
        sums = sums.index_add(1, slot, parts)
        return sums[:, slot] * on

    def forward(self, tokens, attention_mask=None, kv=None):
        """(logits [B, L, V] float32 with the mask logit at -inf, features [B, L, D]).

        With `kv` (a cache.KVStore, see forward_cached) only its query positions run through
        the blocks, against the stored keys/values of the others."""
        if attention_mask is None:
            attention_mask = torch.ones_like(tokens, dtype=torch.bool)
        attention_mask = attention_mask.bool()
        with torch.autocast(
            device_type=tokens.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16
        ):
            x = self.embed(tokens)
            if kv is not None and kv.query is not None:
                # embedded whole (slot sums read other positions), then only the queries go on
                x = x.gather(1, kv.query[..., None].expand(-1, -1, x.shape[-1]))
            for i, block in enumerate(self.blocks[:-1]):
                x = block(x, attention_mask, kv, i)
            features = x
            x = self.blocks[-1](x, attention_mask, kv, len(self.blocks) - 1)
            logits = self.head(self.norm(x))
        logits = logits.float()
        if kv is not None:
            logits, features = kv.merge("logits", logits), kv.merge("features", features)
        logits[..., self.mask_id] = float("-inf")
        return logits, features

    def forward_cached(self, tokens, attention_mask, store):
        """forward() with block-wise key/value caching (upo/cache.py); a refresh (store.query
        None) equals forward() exactly."""
        return self.forward(tokens, attention_mask, kv=store)

    def cache_refusal(self) -> str | None:
        return None  # absolute positions and a plain encoder: any positions can be recomputed

    def freeze_for_inference(self) -> TinyMDM:
        """Frozen, for decoding only. Under bf16 autocast every Linear layer casts its float32
        weights to bf16 on each call; casting them once here gives bit-identical outputs and saves
        about a fifth of a forward pass on this CPU. The fingerprint is taken first, from the
        float32 weights, so it stays the checkpoint's."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        self._frozen_fingerprint = self.fingerprint()
        if self.cfg.bf16:
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    module.to(torch.bfloat16)
        return self

    # The Denoiser protocol's remaining attributes: a token model on the CPU, any batch exact.
    pads_batches = True
    softmax_dtype = None
    topk_ties = False
    tokenizer = None
    eos_ids: list[int] = []  # noqa: RUF012 (never mutated)
    dtype_note = ""  # why this dtype; load_mdm says

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def seq_len(self) -> int:
        return self.cfg.seq_len

    @property
    def dtype_used(self) -> str:
        return "bfloat16" if self.cfg.bf16 else "float32"

    def fingerprint(self) -> str:
        """Identifies these exact weights, so a policy trained on one MDM refuses another."""
        frozen = getattr(self, "_frozen_fingerprint", None)
        if frozen is not None:
            return frozen
        h = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]


def masked_diffusion_loss(model, tokens, t, mask, elbo_weight: bool = False):
    """Cross-entropy on masked positions. `mask` [B, L] bool marks the masked positions (each masked
    independently with probability t [B]). Unmasked positions contribute nothing. With
    `elbo_weight` each sequence's loss is weighted by 1/t (the ELBO), otherwise plain mean."""
    inputs = tokens.masked_fill(mask, model.mask_id)
    logits, _ = model(inputs)
    logits = logits.clone()
    logits[..., model.mask_id] = -1e4  # finite, so masked-out positions cannot produce NaN
    ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # [B, L]
    ce = ce * mask
    if elbo_weight:
        return (ce.sum(1) / t.clamp_min(1e-3)).sum() / (tokens.shape[0] * tokens.shape[1])
    return ce.sum() / mask.sum().clamp_min(1)
