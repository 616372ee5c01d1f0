"""Choosing several positions in one step, with the exact probability of the chosen set.

A set policy has two heads over positions: `first` log-probabilities (a distribution over the
allowed positions, as a one-position policy has) and `keep` logits. One step draws a first
position f from `first`, then keeps every other allowed position i independently with probability
sigmoid(keep_i). The set S is what gets filled. Which member of S was drawn first is not recorded,
so the probability of S sums over it:

    P(S) = sum_{f in S} p(f) * prod_{i in S, i != f} s_i * prod_{i allowed, not in S} (1 - s_i)
         = prod_{i in S} s_i * prod_{i allowed, not in S} (1 - s_i) * sum_{f in S} p(f) / s_i

with s = sigmoid(keep). Summed over every non-empty subset of the allowed positions it is 1 (each
first position's Bernoulli draws over the others sum to one), so GRPO's ratios and the cross-
entropy to a reference's set are exact, as for one position per step.

Greedy decoding (evaluation) takes the most likely first position and keeps the others whose
s_i > 1/2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import NEG_INF, top_by_score


def set_log_prob(
    first_logp: torch.Tensor, keep_logit: torch.Tensor, chosen: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """[N] log P(chosen) for sets [N, L] (bool, non-empty, inside `allowed`); first_logp [N, L]
    is -inf off `allowed`. Differentiable in both heads."""
    keep_logit = keep_logit.float()
    log_keep = F.logsigmoid(keep_logit)
    log_skip = F.logsigmoid(-keep_logit)
    others = allowed & ~chosen
    bernoulli = (log_keep * chosen).sum(1) + (log_skip * others).sum(1)
    via_first = (first_logp - log_keep).masked_fill(~chosen, NEG_INF)
    return bernoulli + torch.logsumexp(via_first, dim=1)


def sample_set(
    first_logp: torch.Tensor,
    keep_logit: torch.Tensor,
    allowed: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[N, L] bool: a first position drawn from exp(first_logp), then every other allowed position
    kept with probability sigmoid(keep_logit)."""
    u = torch.rand(first_logp.shape, generator=generator, device=first_logp.device)
    gumbel = -torch.log(-torch.log(u.clamp_(1e-20, 1.0)))
    keys = (first_logp + gumbel).masked_fill(~allowed, NEG_INF)
    first = torch.zeros_like(allowed).scatter_(1, keys.argmax(1, keepdim=True), True) & allowed
    coins = torch.rand(keep_logit.shape, generator=generator, device=keep_logit.device)
    kept = (coins < torch.sigmoid(keep_logit.float())) & allowed
    return first | kept


def greedy_set(
    first_scores: torch.Tensor, keep_logit: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """[N, L] bool: the best-scoring allowed position (ties to the lowest index) and every other
    allowed position whose keep probability is above 1/2."""
    first = top_by_score(first_scores, allowed, 1)
    return first | ((keep_logit > 0) & allowed)
