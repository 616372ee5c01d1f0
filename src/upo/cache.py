"""Block-wise key/value caching for semi-autoregressive decoding (Fast-dLLM, arXiv 2505.22618).

Inside a block of the answer most of the sequence does not change: the prompt and the blocks
already decoded are fixed, and the masked positions after the block stay masked. The cache runs
one full forward when an item enters a block (the *refresh*, exact), keeps every layer's keys and
values, and for the block's other steps recomputes only

- `prefix`: the positions from the block's start to the end (the block and the masked suffix),
  attending to the cached keys/values of the prompt and the earlier blocks;
- `dual`: the block's positions only, attending to the cached prompt, earlier blocks *and* suffix.

The positions not recomputed keep the logits and features of the refresh. Both are approximate
(the cached keys/values do not see the tokens the block reveals after the refresh); `none` runs
the full forward at every step, as without this module.

Every row of a batch keeps its own block and refreshes on its own: a row's decode does not
depend on what else is in its batch, as with `none`. A step runs at most two forwards: one for the
rows entering a block, one for the rows inside one.

A model that can be cached implements `forward_cached(tokens, attention_mask, store)` (same
inputs and outputs as `forward`, with a `KVStore` that says which positions to recompute and holds
what to reuse) and `cache_refusal()` (None, or why it cannot be cached).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import UpoError

CACHE_MODES = ("none", "prefix", "dual")


def check_cache_mode(mode) -> str:
    if mode not in CACHE_MODES:
        raise UpoError(f"cache must be one of {', '.join(CACHE_MODES)}, got {mode!r:.40}")
    return mode


def check_cacheable(denoiser, mode: str) -> None:
    """Refuse, in one line, a model that cannot run `mode` (nothing to check for "none")."""
    check_cache_mode(mode)
    if mode == "none":
        return
    refusal = getattr(denoiser, "cache_refusal", None)
    why = refusal() if callable(refusal) else f"{type(denoiser).__name__} has no cached forward"
    if why:
        raise UpoError(f"cache {mode}: {why}; use cache none")


class KVStore:
    """Every layer's keys and values and the model's last outputs, for each row of a batch.

    A forward on some rows (`rows`, indices into the batch) either records (`query` None: a full
    forward, everything stored as computed) or reuses (`query` [R, Q]: positions recomputed per
    row; their new keys/values replace the stored ones and every other position's are reused).
    Models call `update` from inside attention and `merge` on their outputs."""

    def __init__(self, batch: int):
        self.batch = batch
        self.rows: torch.Tensor | None = None
        self.query: torch.Tensor | None = None
        self._all = False
        self._kept: dict = {}

    def begin(self, rows: torch.Tensor, query: torch.Tensor | None) -> None:
        self.rows, self.query = rows, query
        self._all = rows.numel() == self.batch  # rows are sorted: all of them, in order

    def _load(self, name) -> torch.Tensor:
        kept = self._kept[name]
        return kept if self._all else kept[self.rows]

    def _save(self, name, value: torch.Tensor) -> None:
        if self._all:
            self._kept[name] = value
            return
        if name not in self._kept:  # rows with nothing to fill never run: room for every row
            self._kept[name] = value.new_zeros((self.batch, *value.shape[1:]))
        self._kept[name][self.rows] = value

    def _scatter(self, name, fresh: torch.Tensor, dim: int) -> torch.Tensor:
        """The stored tensor of the rows with `fresh` (query positions along `dim`) written in."""
        full = self._load(name)
        shape = list(fresh.shape)
        view = [shape[0]] + [1] * (dim - 1) + [shape[dim]] + [1] * (len(shape) - dim - 1)
        index = self.query.view(view)
        # in place: the stored tensors belong to the store alone (merge hands out copies)
        full.scatter_(dim, index.expand(shape), fresh.to(full.dtype))
        if not self._all:
            self._kept[name][self.rows] = full
        return full

    def update(self, key: torch.Tensor, value: torch.Tensor, layer: int, cache_kwargs=None):
        """(keys, values) [R, H, L, Dh] over the whole sequence for attention in `layer`, given
        the ones just computed [R, H, T, Dh] (T = L when recording, Q when reusing). The
        signature of transformers' Cache.update, so models that take a cache object use it."""
        if self.query is None:
            self._save(("k", layer), key)
            self._save(("v", layer), value)
            return key, value
        return self._scatter(("k", layer), key, 2), self._scatter(("v", layer), value, 2)

    def merge(self, name: str, fresh: torch.Tensor) -> torch.Tensor:
        """[R, L, ...] a model output over the whole sequence: `fresh` [R, T, ...] at the query
        positions, the stored one elsewhere. A new tensor: what callers keep never changes."""
        if self.query is None:
            self._save(name, fresh)
            return fresh.clone()
        return self._scatter(name, fresh, 1).clone()

    def get_seq_length(self, layer: int = 0) -> int:
        # transformers' Cache API: models ask how many positions precede the new ones. Queries
        # carry their own positions here, so none precede them.
        return 0


def query_positions(start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """[R, Q] positions start..end-1 of each row, Q the longest span; shorter rows repeat their
    last position (recomputing a position twice gives the same values twice)."""
    q = int((end - start).max())
    pos = start[:, None] + torch.arange(q, device=start.device)
    return torch.minimum(pos, (end - 1)[:, None])


@dataclass
class BlockCache:
    """The cache of one batched decode: which block each row's stored keys/values belong to.

    `first` [B] is each row's first masked position at the start (where its blocks are counted
    from, as decode.block_ids does) and `block_size` the block length (None: the whole answer is
    one block, so only the prompt is cached)."""

    mode: str
    store: KVStore
    first: torch.Tensor
    block_size: int | None
    length: int
    refreshed: torch.Tensor  # [B] the block each row last refreshed in (-1: none yet)

    @classmethod
    def start(cls, denoiser, mode: str, masked: torch.Tensor, block_size: int | None):
        check_cacheable(denoiser, mode)
        b, l = masked.shape
        pos = torch.arange(l, device=masked.device).expand_as(masked)
        first = torch.where(masked, pos, torch.full_like(pos, l)).min(dim=1).values
        refreshed = torch.full((b,), -1, dtype=torch.long, device=masked.device)
        return cls(mode, KVStore(b), first, block_size, l, refreshed)

    def span(self, rows: torch.Tensor, block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[R] start and end of the positions recomputed inside `block` for `rows`."""
        if self.block_size is None:
            start = self.first[rows]
            return start, torch.full_like(start, self.length)
        start = self.first[rows] + block * self.block_size
        if self.mode == "prefix":
            return start, torch.full_like(start, self.length)
        return start, (start + self.block_size).clamp_max(self.length)

    def forward(
        self,
        denoiser,
        tokens: torch.Tensor,
        attention_mask: torch.Tensor,
        rows: torch.Tensor,
        block: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features) of `rows` of the batch, whose current blocks are `block` [R]: a
        full forward for the rows that just entered their block, a cached one for the others."""
        fresh = self.refreshed[rows] != block
        if bool(fresh.all()) or bool((~fresh).all()):
            parts = [(rows, block, bool(fresh[0]))]
        else:
            parts = [(rows[fresh], block[fresh], True), (rows[~fresh], block[~fresh], False)]
        outs = []
        for part, part_block, refresh in parts:
            if refresh:
                self.store.begin(part, None)
            else:
                self.store.begin(part, query_positions(*self.span(part, part_block)))
            outs.append(denoiser.forward_cached(tokens[part], attention_mask[part], self.store))
            if refresh:
                self.refreshed[part] = part_block
        if len(outs) == 1:
            return outs[0]
        # back into the order of `rows`
        order = torch.cat([rows[fresh], rows[~fresh]]).argsort()
        logits = torch.cat([outs[0][0], outs[1][0]])[order]
        features = torch.cat([outs[0][1], outs[1][1]])[order]
        return logits, features
