"""The unmasking loop: reveal k positions per step until nothing is masked.

Batched and padding-exact: each step runs the MDM only on items that still have masked positions,
padded keys are excluded inside attention, and rules break ties by position index, so an item's
answer does not depend on what else is in its batch (tests check batched == one by one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .cache import BlockCache, check_cache_mode
from .errors import UpoError
from .models.denoiser import Denoiser
from .policies.base import Choice, Policy, StepState


@dataclass
class Trajectory:
    """What one batched decode did.

    tokens [B, L] the final tokens; order [B, L] the step at which each position was revealed
    (-1 for positions that were never masked); positions [B, S] the position chosen at each step
    when k == 1 (-1 after an item finished); logprobs [B, S] the policy's log-probability of each
    step's choice; nfe [B] MDM forward calls per item (with those a search policy ran to choose,
    `Choice.extra_nfe`); token_loglik [B] the MDM's log-probability
    of each token it filled, at the step it filled it, summed over the item's steps: how plausible
    the MDM finds its own answer (needs no reference answer, so it can rank decodes of one item).
    """

    tokens: torch.Tensor
    order: torch.Tensor
    positions: torch.Tensor
    logprobs: torch.Tensor
    nfe: torch.Tensor
    token_loglik: torch.Tensor

    @property
    def logprob(self) -> torch.Tensor:
        """Log-probability of each item's whole trajectory: the sum of its step log-probs."""
        return self.logprobs.sum(dim=1)


def block_ids(masked: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """[B, L] block index of each position: blocks of `block_size` positions counted from each
    item's first masked position (semi-autoregressive decoding). All zeros when block_size is None."""
    if block_size is None:
        return torch.zeros_like(masked, dtype=torch.long)
    l = masked.shape[1]
    pos = torch.arange(l, device=masked.device).expand_as(masked)
    first = torch.where(masked, pos, torch.full_like(pos, l)).min(dim=1, keepdim=True).values
    return ((pos - first).clamp_min(0)) // block_size


def fill_tokens(logits: torch.Tensor, temperature: float, generator) -> torch.Tensor:
    """[B, L] token per position: argmax, or a sample at `temperature`."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return flat.view(probs.shape[:-1])


@torch.no_grad()
def unmask(
    denoiser: Denoiser,
    tokens: torch.Tensor,
    policy: Policy,
    attention_mask: torch.Tensor | None = None,
    k: int = 1,
    token_temperature: float = 0.0,
    block_size: int | None = None,
    generator: torch.Generator | None = None,
    on_step: Callable[[torch.Tensor, StepState, Choice], None] | None = None,
    max_steps: int | None = None,
    cache: str = "none",
) -> Trajectory:
    """Decode `tokens` [B, L] (mask_id at the positions to fill) with `policy`.

    Given (unmasked) positions are never changed and every masked position is filled exactly once.
    `on_step(active_rows, state, choice)` sees every step, e.g. to record states for training.
    `max_steps` stops after that many steps and returns the partly decoded tokens (positions still
    masked keep mask_id and order -1), e.g. for a search that looks only a few steps ahead.
    `cache` "prefix" or "dual": block-wise key/value caching (upo/cache.py), approximate and
    faster; "none" runs the whole sequence through the MDM at every step.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be at least 0, got {max_steps}")
    tokens = tokens.clone()
    b, l = tokens.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(tokens, dtype=torch.bool)
    attention_mask = attention_mask.bool()
    masked = (tokens == denoiser.mask_id) & attention_mask
    blocks = block_ids(masked, block_size)
    kv = None
    if check_cache_mode(cache) != "none":
        kv = BlockCache.start(denoiser, cache, masked, block_size)
    # A model's own sampler reproduced exactly (HFDenoiser confidence="model"), else upo's.
    softmax_dtype, topk_ties = denoiser.softmax_dtype, denoiser.topk_ties
    order = torch.full_like(tokens, -1)
    positions, logprobs = [], []
    nfe = torch.zeros(b, dtype=torch.long, device=tokens.device)
    token_loglik = torch.zeros(b, device=tokens.device)
    step = 0
    while masked.any() and (max_steps is None or step < max_steps):
        rows = masked.any(dim=1).nonzero().squeeze(1)
        m = masked[rows]
        blk = blocks[rows]
        current = torch.where(m, blk, torch.full_like(blk, 1 << 30)).min(dim=1, keepdim=True).values
        in_block = blk == current
        if kv is None:
            logits, features = denoiser.forward(tokens[rows], attention_mask[rows])
        else:
            block = current.squeeze(1)
            logits, features = kv.forward(denoiser, tokens, attention_mask, rows, block)
        state = StepState(
            tokens=tokens[rows],
            logits=logits,
            features=features,
            masked=m,
            candidates=m & in_block,
            block=in_block,
            step=step,
            attention_mask=attention_mask[rows],
            softmax_dtype=softmax_dtype,
            topk_ties=topk_ties,
            decode=unmask,  # for searches that decode trial copies (policies/lookahead.py)
        )
        choice = policy.select(state, k, generator)
        chosen = choice.chosen & state.candidates
        if not chosen.any(dim=1).all():
            raise no_choice_error(policy, logits, state.candidates, step)
        fills = fill_tokens(logits, token_temperature, generator)
        item, pos_idx = chosen.nonzero(as_tuple=True)
        filled_lp = torch.log_softmax(logits[item, pos_idx].float(), dim=-1)
        filled_lp = filled_lp.gather(1, fills[item, pos_idx][:, None]).squeeze(1)
        token_loglik.index_add_(0, rows[item], filled_lp)
        sub = tokens[rows]
        sub[chosen] = fills[chosen]
        tokens[rows] = sub
        sub_order = order[rows]
        sub_order[chosen] = step
        order[rows] = sub_order
        masked[rows] = m & ~chosen
        nfe[rows] += 1
        if choice.extra_nfe is not None:
            nfe[rows] += choice.extra_nfe
        pos = torch.full((b,), -1, dtype=torch.long, device=tokens.device)
        pos[rows] = chosen.float().argmax(dim=1)
        lp = torch.zeros(b, device=tokens.device)
        lp[rows] = choice.logprob.float()
        positions.append(pos)
        logprobs.append(lp)
        if on_step is not None:
            on_step(rows, state, choice)
        step += 1
    device = tokens.device
    return Trajectory(
        tokens=tokens,
        order=order,
        # zero steps when nothing was masked
        positions=torch.stack(positions, 1)
        if positions
        else torch.zeros(b, 0, dtype=torch.long, device=device),
        logprobs=torch.stack(logprobs, 1) if logprobs else torch.zeros(b, 0, device=device),
        nfe=nfe,
        token_loglik=token_loglik,
    )


def no_choice_error(policy, logits: torch.Tensor, candidates: torch.Tensor, step: int) -> UpoError:
    """Why a step chose nothing. A sampled policy draws only among positions of finite
    log-probability: NaN or inf logits (a degenerate model) leave none, which says more about
    the MDM than about the policy."""
    # -inf is a legitimate logit (the mask token's is always -inf); NaN and +inf are not.
    broken = (torch.isnan(logits) | torch.isposinf(logits)).any(dim=-1)
    rows = broken & candidates
    if rows.any():
        item = int(rows.any(dim=1).nonzero()[0])
        return UpoError(
            f"the MDM returned NaN or inf logits at step {step} (item {item} of the batch), so "
            f"policy {policy.name} had no position to choose; the model's weights or inputs are "
            "broken"
        )
    return UpoError(f"policy {policy.name} chose no position at step {step} for some item")
