"""Rollouts that record every visited state, so training never has to re-run the MDM.

`collect` decodes a batch with a sampling policy and keeps, per unmasking step and item, the
policy's inputs (MDM features in bf16, top-8 probabilities, flags, allowed positions), the action,
its log-probability under the distribution it was sampled from, and the reference policy's view of
the same state (its greedy choice and its full distribution over positions).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..decode import Trajectory, unmask
from ..models.denoiser import Denoiser
from ..policies.base import Policy, StepState, top_by_score
from ..policies.learned import PolicyInputs, inputs_from_state
from ..policies.rules import confidence


@dataclass
class States:
    """N recorded states, flattened over steps and items."""

    inputs: PolicyInputs
    item: torch.Tensor  # [N] row of the rollout batch the state belongs to
    step: torch.Tensor  # [N] unmasking step
    action: torch.Tensor  # [N] chosen position
    sample_logp: torch.Tensor  # [N] log-prob of the action under the sampling distribution
    ref_choice: torch.Tensor  # [N] the reference's greedy position (-1 without a reference)
    ref_logp: torch.Tensor  # [N] log g_ref(action | state) (0 without a reference)
    ref_dist: torch.Tensor | None  # [N, L] reference log-probs over positions, when kept
    # [N, L] positions where the MDM's argmax token equals the reference answer (when answers were
    # given), all False once an earlier step filled a position wrongly (the item has failed then,
    # whatever comes next): the label of correctness-supervised pre-training.
    correct: torch.Tensor | None = None
    # Set policies (several positions per step): [N, L] the set filled, and the reference's set
    # at the same state; None for one-position policies, whose `action` says it all.
    chosen_set: torch.Tensor | None = None
    ref_set: torch.Tensor | None = None
    # [N, L] the positions tied at the top of the reference's score, when the cross-entropy
    # target spreads over ties (UPOConfig.ce_ties: model-dtype); None: one-hot on ref_choice
    ref_ties: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.item)

    def take(self, idx: torch.Tensor) -> States:
        """The states at `idx`, every field taken alike (absent optional fields stay None)."""
        taken = {}
        for f in fields(self):
            value = getattr(self, f.name)
            taken[f.name] = (
                value if value is None else value.take(idx) if f.name == "inputs" else value[idx]
            )
        return States(**taken)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor dict for a safetensors file (absent optional fields left out)."""
        out = {f"inputs.{f.name}": getattr(self.inputs, f.name) for f in fields(PolicyInputs)}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "inputs" and value is not None:
                out[f.name] = value
        return out

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor]) -> States:
        inputs = PolicyInputs(**{f.name: tensors[f"inputs.{f.name}"] for f in fields(PolicyInputs)})
        rest = {f.name: tensors.get(f.name) for f in fields(States) if f.name != "inputs"}
        return States(inputs=inputs, **rest)


def on_track(state: StepState, target: torch.Tensor) -> torch.Tensor:
    """[B] bool: nothing filled so far differs from the answer `target` [B, L]. Only at such
    states can the next choice still decide whether the item is solved."""
    return ((state.tokens == target) | state.masked).all(1)


def reference_view(reference: Policy | None, state: StepState, allowed: torch.Tensor):
    """(greedy choice [B], log-probs over positions [B, L]) of the reference at this state."""
    if reference is None:
        b, l = allowed.shape
        dev = allowed.device
        return torch.full((b,), -1, dtype=torch.long, device=dev), torch.zeros(b, l, device=dev)
    logp = reference.log_probs(state)
    if reference.deterministic:
        choice = top_by_score(reference.greedy_scores(state), state.candidates, 1).float().argmax(1)
    else:
        # A stochastic reference's "choice" is its most confident mode (a uniform Top-K has no
        # unique argmax; index order would make agreement numbers meaningless).
        modes = logp == logp.max(dim=1, keepdim=True).values
        choice = top_by_score(confidence(state), modes & state.candidates, 1).float().argmax(1)
    return choice, logp


@torch.no_grad()
def collect(
    mdm: Denoiser,
    tokens: torch.Tensor,
    sampler: Policy,
    reference: Policy | None,
    restrict_topk: int | None,
    generator: torch.Generator | None = None,
    keep_ref_dist: bool = False,
    answers: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    block_size: int | None = None,
    certain_above: float | None = None,
    sets: bool = False,
    cache: str = "none",
) -> tuple[Trajectory, States]:
    """Decode `tokens` with `sampler` (one position per step, or a set with `sets`) and record
    every visited state with what the reference would have chosen there. `cache`: block-wise
    key/value caching (upo/cache.py); the states keep the features the sampler saw."""
    parts: dict[str, list] = {
        k: []
        for k in (
            "inputs",
            "item",
            "step",
            "action",
            "lp",
            "rc",
            "rlp",
            "rd",
            "correct",
            "set",
            "ref_set",
        )
    }

    def record(rows, state: StepState, choice):
        inp = inputs_from_state(state, mdm.mask_id, restrict_topk, certain_above)
        action = choice.chosen.float().argmax(1)
        ref_choice, ref_logp = reference_view(reference, state, inp.allowed)
        parts["inputs"].append(inp)
        parts["item"].append(rows)
        parts["step"].append(torch.full_like(rows, state.step))
        parts["action"].append(action)
        parts["lp"].append(choice.logprob.float())
        parts["rc"].append(ref_choice)
        parts["rlp"].append(
            ref_logp.gather(1, action[:, None]).squeeze(1)
            if reference is not None
            else torch.zeros(len(rows), device=rows.device)
        )
        if keep_ref_dist:
            parts["rd"].append(ref_logp)
        if sets:
            parts["set"].append(choice.chosen & state.candidates)
            if reference is not None:  # a deterministic rule (see rl/references.py)
                parts["ref_set"].append(reference.select(state, 1).chosen & state.candidates)
        if answers is not None:
            target = answers[rows]
            filled = state.logits.argmax(-1)
            parts["correct"].append(
                (filled == target) & state.masked & on_track(state, target)[:, None]
            )

    traj = unmask(
        mdm,
        tokens,
        sampler,
        attention_mask=attention_mask,
        k=1,
        block_size=block_size,
        generator=generator,
        on_step=record,
        cache=cache,
    )
    inputs = PolicyInputs.cat(parts.pop("inputs"))
    cat = {k: torch.cat(v) if v else None for k, v in parts.items()}
    states = States(
        inputs=inputs,
        item=cat["item"],
        step=cat["step"],
        action=cat["action"],
        sample_logp=cat["lp"],
        ref_choice=cat["rc"],
        ref_logp=cat["rlp"],
        ref_dist=cat["rd"],
        correct=cat["correct"],
        chosen_set=cat["set"],
        ref_set=cat["ref_set"],
    )
    return traj, states


def chunks(n: int, size: int):
    """Index tensors 0..n-1 in consecutive runs of at most `size`."""
    for start in range(0, n, size):
        yield torch.arange(start, min(start + size, n))
