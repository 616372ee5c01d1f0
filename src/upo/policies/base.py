"""What an unmasking policy sees at one step, how a choice is drawn from its distribution, and
what a policy class declares about its name (policies/registry.py reads the declarations)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

NEG_INF = float("-inf")


@dataclass
class StepState:
    """One unmasking step for a batch of active items.

    logits [B, L, V] float32 (mask token at -inf); features [B, L, D] (MDM hidden states entering
    its last block); masked [B, L] positions still masked; candidates [B, L] positions the policy may
    choose now (masked and inside the current block); block [B, L] the current block.
    """

    tokens: torch.Tensor
    logits: torch.Tensor
    features: torch.Tensor
    masked: torch.Tensor
    candidates: torch.Tensor
    block: torch.Tensor
    step: int
    attention_mask: torch.Tensor | None = None  # [B, L] False at padding; None: no padding
    # The dtype token probabilities are computed in (None: the logits', float32). LLaDA's own
    # generate() takes its softmax in the model's dtype; in bf16 that rounds near-ties into ties,
    # so reproducing its orders exactly needs the same rounding (HFDenoiser confidence="model").
    softmax_dtype: torch.dtype | None = None
    # Break ties between equal scores as torch.topk does (LLaDA's generate) instead of towards
    # the lowest position. Only for reproducing that sampler: topk's choice among ties depends on
    # the device and the row length, so batched decodes may then differ from one-by-one ones.
    topk_ties: bool = False
    # The decode loop itself (upo.decode.unmask), for a search that finishes trial copies of the
    # items (lookahead): handed over here so that policies need not import upo.decode, which
    # imports them (no package loop). None outside a decode loop.
    decode: Callable | None = None

    @property
    def probs(self) -> torch.Tensor:
        if not hasattr(self, "_probs"):
            logits = (
                self.logits if self.softmax_dtype is None else self.logits.to(self.softmax_dtype)
            )
            self._probs = torch.softmax(logits, dim=-1).float()
        return self._probs


@dataclass
class Choice:
    """The positions chosen at one step: chosen [B, L] bool, and the exact log-probability [B] of
    that choice under the distribution it was drawn from (0 for deterministic rules). A search
    policy that ran the MDM itself to choose says how often per item in extra_nfe [B], so the
    decode's NFE counts every forward."""

    chosen: torch.Tensor
    logprob: torch.Tensor
    extra_nfe: torch.Tensor | None = None


def masked_log_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """log softmax of scores over the allowed positions; -inf elsewhere. Stable: subtracts the max
    over allowed positions, and a row with nothing allowed gives all -inf instead of NaN."""
    scores = scores.float().masked_fill(~allowed, NEG_INF)
    top = scores.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    shifted = scores - top
    lse = torch.logsumexp(shifted, dim=-1, keepdim=True)
    out = shifted - lse
    return out.masked_fill(~allowed, NEG_INF)


def top_by_score(
    scores: torch.Tensor, allowed: torch.Tensor, k: int, topk_ties: bool = False
) -> torch.Tensor:
    """[B, L] bool: the k highest-scoring allowed positions (fewer if fewer are allowed).
    Ties go to the lowest position index (stable sort), so results never depend on batching;
    with topk_ties, to whichever torch.topk returns (see StepState.topk_ties)."""
    scores = scores.float().masked_fill(~allowed, NEG_INF)
    if topk_ties:
        order = torch.topk(scores, min(k, scores.shape[-1]), dim=-1).indices
    else:
        order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :k]
    chosen = torch.zeros_like(allowed)
    chosen.scatter_(1, order, True)
    return chosen & allowed


def sample_without_replacement(
    logp: torch.Tensor, k: int, generator: torch.Generator | None
) -> Choice:
    """Draw k positions from the distribution exp(logp) without replacement (Gumbel-top-k) and
    return the exact Plackett-Luce log-probability of the drawn ordered sequence."""
    allowed = torch.isfinite(logp)
    u = torch.rand(logp.shape, generator=generator, device=logp.device).clamp_(1e-20, 1.0)
    gumbel = -torch.log(-torch.log(u))
    keys = (logp + gumbel).masked_fill(~allowed, NEG_INF)
    n_allowed = allowed.sum(-1)
    order = torch.sort(keys, dim=-1, descending=True, stable=True).indices[:, :k]  # [B, k]
    total = torch.zeros(logp.shape[0], device=logp.device)
    remaining = allowed.clone()
    chosen = torch.zeros_like(allowed)
    for j in range(min(k, logp.shape[1])):
        idx = order[:, j : j + 1]
        live = j < n_allowed  # rows that still have something to draw
        step_logp = masked_log_softmax(logp, remaining).gather(1, idx).squeeze(1)
        total = total + torch.where(live, step_logp, torch.zeros_like(step_logp))
        pick = torch.zeros_like(allowed).scatter_(1, idx, True) & live[:, None]
        chosen |= pick
        remaining &= ~pick
    return Choice(chosen, total)


class Policy:
    """An unmasking policy. Subclasses give `log_probs(state)` ([B, L], -inf off support) and say
    whether they are deterministic (`greedy_scores`) or sampled.

    A policy that users call by name declares it here, and policies/registry.py builds every
    list, help text and parser from these declarations: a new rule is its class alone."""

    name = "policy"
    deterministic = False
    # "threshold:P": the head users type, then the parameter's letter when it takes one. ""
    # for policies that have no name of their own (learned ones come from a directory).
    spelling: ClassVar[str] = ""
    default: ClassVar[float | int | None] = None  # the parameter when a name leaves it out
    aliases: ClassVar[tuple[str, ...]] = ()  # older heads, still accepted in users' configs
    summary: ClassVar[str] = ""  # one line for the generated docs/policies.md
    # As UPO's reference: "ce" for deterministic rules (KL to a one-hot rule is infinite off its
    # choice, so cross-entropy to that choice), "kl" for rules with full support on their
    # candidates (the KL is finite).
    regulariser: ClassVar[str] = "ce"
    parallel: ClassVar[bool] = False  # fills several positions per step by itself (ignores k)
    needs_mdm: ClassVar[bool] = False  # runs the MDM itself to choose (a search): built with it
    learned: ClassVar[bool] = False

    @property
    def reference_topk(self) -> int | None:
        """As UPO's reference, the learned policy may only choose among this many most confident
        candidates (the Top-K rule's K; None: anywhere)."""
        return None

    @classmethod
    def head(cls) -> str:
        return cls.spelling.partition(":")[0]

    @classmethod
    def takes_parameter(cls) -> bool:
        return ":" in cls.spelling

    @classmethod
    def from_parameter(cls, arg: str, mdm=None) -> Policy:
        """The policy named `head:arg` (arg "" when the name gives none: the default). The
        parameter has the default's type; ValueError when it does not parse or is out of range."""
        if not cls.takes_parameter():
            return cls()
        return cls(type(cls.default)(arg) if arg else cls.default)

    def to(self, device: torch.device) -> Policy:
        """This policy on `device`, where its MDM's logits and features are (rules hold no
        tensors: nothing to move)."""
        return self

    def log_probs(self, state: StepState) -> torch.Tensor:
        raise NotImplementedError

    def greedy_scores(self, state: StepState) -> torch.Tensor:
        raise NotImplementedError

    def select(self, state: StepState, k: int, generator: torch.Generator | None = None) -> Choice:
        if self.deterministic:
            chosen = top_by_score(self.greedy_scores(state), state.candidates, k, state.topk_ties)
            return Choice(chosen, torch.zeros(chosen.shape[0], device=chosen.device))
        return sample_without_replacement(self.log_probs(state), k, generator)


def spelled_class(name: str, classes: tuple[type[Policy], ...]) -> type[Policy] | None:
    """The class among `classes` whose spelling `name` follows (`head`, `head:PARAMETER`, or an
    alias head), None when none does; the parameter itself is not checked."""
    head, colon, _ = name.partition(":")
    for cls in classes:
        if head in (cls.head(), *cls.aliases):
            # `confidence:3` spells nothing: the head takes no parameter
            return cls if cls.takes_parameter() or not colon else None
    return None


def build_named(name: str, classes: tuple[type[Policy], ...], mdm=None) -> Policy:
    """The policy `name` spells among `classes`; ValueError "unknown policy" or "bad policy"
    naming the input otherwise. `mdm`: what a search policy runs (None for plain rules)."""
    cls = spelled_class(name, classes)
    if cls is None:
        raise ValueError(f"unknown policy {name!r}")
    if cls.needs_mdm and mdm is None:
        raise ValueError(f"policy {name!r} runs the MDM itself: build it with one")
    try:
        return cls.from_parameter(name.partition(":")[2], mdm)
    except ValueError as err:
        raise ValueError(f"bad policy {name!r}: {err}") from None
