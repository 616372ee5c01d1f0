"""The GRPO step's objective, chosen by name (UPOConfig.objective, in the spirit of TRL's
`loss_type`). An objective turns a rollout round's rewards into advantages, the policy's
log-probabilities into ratios, and one chunk of whole trajectories into a loss; grpo.update runs
the forward passes and the optimiser around it. A new objective is one class here, listed in
OBJECTIVES.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UpoError
from .grpo_config import UPOConfig
from .loss_options import advantages, policy_ratio
from .references import Reference


def per_item_sum(values: torch.Tensor, item: torch.Tensor, n_items: int) -> torch.Tensor:
    return torch.zeros(n_items, dtype=values.dtype, device=values.device).index_add(0, item, values)


@dataclass
class Chunk:
    """What one forward pass over a chunk of whole trajectories gives the loss."""

    item: torch.Tensor  # [N] each state's trajectory (indexes the advantages)
    new: torch.Tensor  # [N] log-prob of what was done, under the policy being trained
    old: torch.Tensor  # [N] the same under the rollout policy (no gradient)
    ratio: torch.Tensor  # [N] the objective's ratio of the two
    weight: torch.Tensor  # [N] each step's weight in the loss (grpo.step_weights)
    ref_nll: torch.Tensor | None  # [N] -log-prob of the reference's choice (CE references)


class UPOObjective:
    """upo's objective: the clipped ratio objective per unmasking step, plus beta times the
    regulariser: cross-entropy to a one-hot reference's choice or set, or the score-function KL
    estimator to a stochastic reference. The UPO authors' variants are options of it
    (loss_options.py, docs/paper-recipe.md)."""

    def __init__(self, cfg: UPOConfig, ref: Reference):
        self.cfg, self.ref = cfg, ref

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        return advantages(
            rewards, cfg.group_size, cfg.scale_rewards, cfg.scale_rewards_eps, cfg.zero_std_groups
        )

    def ratio(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        return policy_ratio(new, old, self.cfg.log_ratio_clamp)

    def loss(
        self, c: Chunk, adv: torch.Tensor, ref_traj: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        """The chunk's loss and its regulariser's value (CE references; the KL one is estimated
        over the whole batch by `regulariser_value`). adv and ref_traj [n_items] are per
        trajectory: advantages and log g_ref of the whole trajectory."""
        cfg = self.cfg
        n_items = len(adv)
        a = adv[c.item]
        surrogate = torch.min(c.ratio * a, c.ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * a)
        loss = -(surrogate * c.weight).sum()
        reg = 0.0
        if cfg.beta == 0:
            return loss, reg
        if self.ref.regulariser == "ce":
            loss = loss + cfg.beta * (c.ref_nll * c.weight).sum()
            reg = float((c.ref_nll.detach() * c.weight).sum())
        elif self.ref.regulariser == "kl":
            # Score-function KL estimator: w (1 + log g(tau) - log g_ref(tau)) grad log g(tau),
            # with w = clip(g(tau) / g_old(tau), 0.5, 2) computed without gradient. The chunk
            # holds whole trajectories, so its own pass gives log g(tau); at the first inner step
            # new = old and w = 1 exactly. grad log g(tau) is a sum of per-step terms, weighted
            # like the policy gradient's (divided by the step count under "mean").
            new_traj = per_item_sum(c.new.detach(), c.item, n_items)
            old_traj = per_item_sum(c.old, c.item, n_items)
            w = torch.exp(new_traj - old_traj).clamp(0.5, 2.0)
            kl_coef = w * (1 + new_traj - ref_traj)
            loss = loss + cfg.beta * (kl_coef[c.item] * c.new * c.weight).sum()
        return loss, reg

    def regulariser_value(
        self, summed: float, old: torch.Tensor, item: torch.Tensor, ref_traj: torch.Tensor
    ) -> float:
        """The regulariser reported for a round: the chunks' summed CE, or for a KL reference
        the estimate of KL(g_old || g_ref) over the batch's trajectories."""
        if self.ref.regulariser == "kl":
            return float((per_item_sum(old, item, len(ref_traj)) - ref_traj).mean())
        return summed


OBJECTIVES = {"upo": UPOObjective}


def make_objective(cfg: UPOConfig, ref: Reference) -> UPOObjective:
    """The objective UPOConfig.objective names; one-line UpoError for an unknown name."""
    if cfg.objective not in OBJECTIVES:
        raise UpoError(f"unknown objective {cfg.objective!r}; valid: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[cfg.objective](cfg, ref)
