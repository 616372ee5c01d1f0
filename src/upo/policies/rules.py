"""Hand-written unmasking rules. Each has a score over positions, a candidate set and an exact
log-probability, so any of them can serve as the reference policy of UPO.

Deterministic rules (confidence, margin, entropy, left-to-right, threshold, eb) put all their mass
on the best-scoring candidate; ties go to the lowest position index. threshold and eb choose several
positions per step by themselves (the parallel rules); the others take the k best.

A new rule is one class here that declares its `spelling` (see base.Policy), listed in HAND_RULES;
the registry (policies/registry.py) then parses, lists and documents it everywhere.
"""

from __future__ import annotations

import torch

from .base import (
    NEG_INF,
    Choice,
    Policy,
    StepState,
    build_named,
    masked_log_softmax,
    top_by_score,
)


def confidence(state: StepState) -> torch.Tensor:
    """Top-1 token probability per position [B, L]."""
    return state.probs.max(dim=-1).values


def margin(state: StepState) -> torch.Tensor:
    top2 = state.probs.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def neg_entropy(state: StepState) -> torch.Tensor:
    p = state.probs
    return (p * torch.log(p.clamp_min(1e-30))).sum(-1)


def position_order(state: StepState) -> torch.Tensor:
    l = state.candidates.shape[1]
    return -torch.arange(l, dtype=torch.float32, device=state.candidates.device).expand(
        state.candidates.shape
    )


def one_hot_log_probs(scores: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    best = top_by_score(scores, candidates, 1)
    return torch.zeros_like(scores, dtype=torch.float32).masked_fill(~best, NEG_INF)


class ArgmaxRule(Policy):
    """Deterministically pick the candidates with the highest score."""

    deterministic = True

    score = None  # a named subclass's score function (Confidence: confidence)

    def __init__(self, name: str, score_fn):
        self.name = name
        self.score_fn = score_fn

    @classmethod
    def from_parameter(cls, arg: str, mdm=None) -> ArgmaxRule:
        return cls(cls.spelling, cls.score)

    def greedy_scores(self, state):
        return self.score_fn(state)

    def log_probs(self, state):
        return one_hot_log_probs(self.score_fn(state), state.candidates)


class RandomOrder(Policy):
    name = spelling = "random"
    summary = "uniform over the candidates"
    regulariser = "kl"  # full support: the KL to it is finite

    def log_probs(self, state):
        return masked_log_softmax(
            torch.zeros_like(state.candidates, dtype=torch.float32), state.candidates
        )


class Confidence(ArgmaxRule):
    spelling = "confidence"
    summary = "the candidate with the highest top-1 token probability (max-confidence)"
    score = staticmethod(confidence)


class Margin(ArgmaxRule):
    spelling = "margin"
    summary = "the largest gap between a candidate's top-2 token probabilities"
    score = staticmethod(margin)


class Entropy(ArgmaxRule):
    spelling = "entropy"
    summary = "the lowest token entropy"
    score = staticmethod(neg_entropy)


class LeftToRight(ArgmaxRule):
    spelling = "left-to-right"
    summary = "the leftmost candidate"
    score = staticmethod(position_order)


# Scores are probabilities (at most 1) divided by tau, in float32. Below float32's smallest normal
# number tau loses its precision and 1 / tau heads for inf, which turns every score into inf or
# NaN; anything above it stays finite (the softmax subtracts the maximum). A tau that small is
# already the argmax of its scores.
MIN_TAU = float(torch.finfo(torch.float32).tiny)


def check_tau(rule: str, tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"{rule} temperature must be positive, got {tau}")
    if tau < MIN_TAU:
        raise ValueError(f"{rule} temperature must be at least {MIN_TAU:.2g}, got {tau:g}")


class SoftmaxConfidence(Policy):
    """softmax over candidate positions of confidence / tau."""

    spelling, default, regulariser = "softmax:TAU", 0.1, "kl"
    summary = "sampled: softmax of the top-1 probability / TAU over the candidates"

    def __init__(self, tau: float):
        check_tau("softmax", tau)
        self.tau = tau
        self.name = f"softmax:{tau:g}"

    def log_probs(self, state):
        return masked_log_softmax(confidence(state) / self.tau, state.candidates)


class SoftmaxVocab(Policy):
    """The UPO paper's softmax reference: g(i | x) proportional to sum_v exp(p(v | x, i) / tau)
    over the candidate positions, p the MDM's token distribution at i (the whole vocabulary, so
    with a large vocabulary a low-confidence position still gets the weight of its V near-zero
    terms). `softmax:TAU` is a different rule: softmax of the top-1 probability alone."""

    spelling, default, regulariser = "softmax-vocab:TAU", 0.05, "kl"
    summary = "sampled: the UPO paper's softmax reference, over the whole vocabulary (TAU 0.05)"

    def __init__(self, tau: float):
        check_tau("softmax-vocab", tau)
        self.tau = tau
        self.name = f"softmax-vocab:{tau:g}"

    def scores(self, state) -> torch.Tensor:
        """[B, L] log sum_v exp(p_v / tau) at candidate positions (0 elsewhere). Only candidate
        rows are reduced: an LLM's [B, L, V] probabilities divided by tau would be another
        copy of the largest tensor of the step."""
        out = torch.zeros(state.candidates.shape, dtype=torch.float32, device=state.probs.device)
        rows = state.probs[state.candidates].float()
        out[state.candidates] = torch.logsumexp(rows / self.tau, dim=-1)
        return out

    def log_probs(self, state):
        return masked_log_softmax(self.scores(state), state.candidates)


class TopKRandom(Policy):
    """Uniform over the K most confident candidates."""

    spelling, default, regulariser = "topk-random:K", 5, "kl"
    aliases = ("topk",)  # the reference's spelling before the registry: users' configs have it
    summary = "sampled: uniform over the K most confident candidates"

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"topk-random needs K >= 1, got {k}")
        self.k = k
        self.name = f"topk-random:{k}"

    @property
    def reference_topk(self) -> int:
        return self.k  # as a reference it keeps the learned policy inside the same K candidates

    def support(self, state) -> torch.Tensor:
        return top_by_score(confidence(state), state.candidates, self.k)

    def log_probs(self, state):
        support = self.support(state)
        return masked_log_softmax(torch.zeros_like(support, dtype=torch.float32), support)


class Threshold(Policy):
    """Fast-dLLM style parallel rule: every candidate whose confidence exceeds the threshold, and
    at least the most confident one, per step. Ignores k."""

    deterministic = parallel = True
    spelling, default = "threshold:P", 0.9
    summary = "every candidate whose top-1 probability exceeds P, at least one (Fast-dLLM)"

    def __init__(self, threshold: float):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.name = f"threshold:{threshold:g}"

    def greedy_scores(self, state):
        return confidence(state)

    def log_probs(self, state):
        return one_hot_log_probs(confidence(state), state.candidates)

    def select(self, state, k, generator=None):
        conf = confidence(state)
        chosen = (conf > self.threshold) & state.candidates
        chosen |= top_by_score(conf, state.candidates, 1)
        return Choice(chosen, torch.zeros(chosen.shape[0], device=chosen.device))


class EntropyBound(Policy):
    """EB-Sampler style parallel rule: the most confident candidates, taken in order of confidence
    while their summed token entropy (nats) stays within `bound`, and at least the most confident
    one, per step. A small bound fills one position at a time where the MDM hesitates and many
    where it is sure. Ignores k."""

    deterministic = parallel = True
    spelling, default = "eb:GAMMA", 0.1
    summary = "the most confident candidates while their summed entropy stays <= GAMMA (EB-Sampler)"

    def __init__(self, bound: float):
        if not bound >= 0:
            raise ValueError(f"the entropy bound must be >= 0, got {bound}")
        self.bound = bound
        self.name = f"eb:{bound:g}"

    def greedy_scores(self, state):
        return confidence(state)

    def log_probs(self, state):
        return one_hot_log_probs(confidence(state), state.candidates)

    def select(self, state, k, generator=None):
        conf = confidence(state).masked_fill(~state.candidates, NEG_INF)
        order = torch.sort(conf, dim=-1, descending=True, stable=True).indices
        entropy = -neg_entropy(state).gather(1, order)
        allowed = state.candidates.gather(1, order)
        within = torch.cumsum(entropy.masked_fill(~allowed, 0.0), dim=1) <= self.bound
        within[:, 0] = True  # at least the most confident candidate
        chosen = torch.zeros_like(state.candidates)
        chosen.scatter_(1, order, within & allowed)
        return Choice(chosen, torch.zeros(chosen.shape[0], device=chosen.device))


# Every hand rule, in the order lists and help texts show them.
HAND_RULES: tuple[type[Policy], ...] = (
    RandomOrder,
    Confidence,
    Margin,
    Entropy,
    LeftToRight,
    TopKRandom,
    SoftmaxConfidence,
    SoftmaxVocab,
    Threshold,
    EntropyBound,
)
RULE_NAMES = [rule.spelling for rule in HAND_RULES]


def make_rule(name: str) -> Policy:
    """A hand rule by its name; ValueError naming the bad input otherwise (the CLI adds the list
    of valid names, see policies/registry.py)."""
    return build_named(name, HAND_RULES)
