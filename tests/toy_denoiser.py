"""A toy frozen MDM on which exactly one unmasking order is right, and confidence misleads.

The answer is a fixed sequence of `n_symbols` symbols (tokens 1..n_symbols, mask 0). The
prediction at position i is right only when position i-1 is already revealed (or i == 0);
otherwise the model confidently predicts a wrong symbol. So left-to-right decoding gets every
position right, while max-confidence decoding is lured to positions whose predecessor is still
masked. Features identify the position (one-hot) and carry the mask flag, so a policy can learn a
position order from them.
"""

from __future__ import annotations

import math

import torch

READY_LOGIT = 1.0  # the right symbol, modestly preferred (confidence ~0.58 with 3 symbols)
LURE_LOGIT = 4.0  # a wrong symbol, strongly preferred (confidence ~0.96 with 3 symbols)


class FloatTokenModel:
    """The Denoiser protocol attributes of a float32 token model on the CPU (no tokenizer)."""

    device = torch.device("cpu")
    pads_batches = True
    dtype_used = "float32"
    dtype_note = ""
    softmax_dtype = None
    topk_ties = False
    tokenizer = None
    eos_ids: list[int] = []  # noqa: RUF012


class ChainDenoiser(FloatTokenModel):
    """Implements the Denoiser protocol (upo.models.denoiser): a float32 token model on the CPU."""

    def __init__(self, seq_len: int = 6, n_symbols: int = 3):
        self.seq_len = seq_len
        self.n_symbols = n_symbols
        self.mask_id = 0
        self.vocab_size = n_symbols + 1
        self.feature_dim = seq_len + 1
        self.target = torch.arange(seq_len) % n_symbols + 1  # 1, 2, 3, 1, 2, 3, ...

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        b, l = tokens.shape
        masked = tokens == self.mask_id
        ready = torch.ones_like(masked)
        ready[:, 1:] = ~masked[:, :-1]
        right = self.target[:l].expand(b, l)
        wrong = right % self.n_symbols + 1
        v = self.vocab_size
        one_hot_right = torch.nn.functional.one_hot(right, v).float()
        one_hot_wrong = torch.nn.functional.one_hot(wrong, v).float()
        logits = (
            one_hot_right * (READY_LOGIT * ready.float())[..., None]
            + one_hot_wrong * (LURE_LOGIT * (~ready).float())[..., None]
        )
        logits[..., self.mask_id] = float("-inf")
        position = torch.eye(l).expand(b, l, l)
        features = torch.cat([position, masked.float()[..., None]], dim=-1)
        return logits, features

    def fingerprint(self) -> str:
        return f"chain-{self.seq_len}-{self.n_symbols}"

    def all_masked(self, n: int) -> torch.Tensor:
        return torch.full((n, self.seq_len), self.mask_id, dtype=torch.long)

    def reward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Fraction of positions right, per item."""
        return (tokens == self.target).float().mean(1)


class ConflictDenoiser(FloatTokenModel):
    """A toy frozen MDM on which filling two positions together is wrong.

    Positions come in pairs (a, b); the answer is 1 at every a and 2 at every b (mask 0). The
    model predicts 1 at every a, and at b it predicts 2 once its a is revealed but 1 (wrong, just
    as confidently) while its a is still masked: the two look alike until one is filled, as two
    cells of one Sudoku row that both seem to want the same digit. Every prediction has
    confidence 0.95, so threshold:0.9 fills the whole sequence in one step and gets every b
    wrong; filling the a's first, then the b's, gets everything right in two steps. Features say
    whether a position is a b and whether its a is still masked.
    """

    seq_len = None
    mask_id = 0
    vocab_size = 3
    feature_dim = 3
    CONFIDENT = math.log(0.95 / 0.05)  # logit gap for probability 0.95 over the other symbol

    def __init__(self, n_pairs: int = 3):
        self.n_pairs = n_pairs
        self.length = 2 * n_pairs
        self.target = torch.tensor([1, 2] * n_pairs)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
        b, l = tokens.shape
        masked = tokens == self.mask_id
        is_b = (torch.arange(l) % 2 == 1).expand(b, l)
        partner_masked = torch.zeros_like(masked)
        partner_masked[:, 1::2] = masked[:, 0::2]
        predicted = torch.where(is_b & ~partner_masked, 2, 1)
        logits = torch.zeros(b, l, self.vocab_size)
        logits.scatter_(2, predicted[..., None], self.CONFIDENT)
        logits[..., self.mask_id] = float("-inf")
        features = torch.stack([is_b, partner_masked, masked], dim=-1).float()
        return logits, features

    def fingerprint(self) -> str:
        return f"conflict-{self.n_pairs}"

    def all_masked(self, n: int) -> torch.Tensor:
        return torch.full((n, self.length), self.mask_id, dtype=torch.long)

    def reward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Fraction of positions right, per item."""
        return (tokens == self.target).float().mean(1)
