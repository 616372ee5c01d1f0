"""Trial-decode lookahead: a search rule that lets the MDM finish the puzzle once per candidate.

Max-confidence is kept wherever the most confident candidate is above `gate`. At the remaining
*decision* states, each of the K most confident candidates is filled with its argmax token, the
rest is decoded with max-confidence, and the candidate whose completion the MDM finds likeliest
(the candidate's own log-probability plus the completion's `token_loglik`) is chosen. No answer is
used. On the built-in Sudoku MDM about 4 of a puzzle's 54-58 steps are decisions, and `lookahead:3`
costs 6-9 times the forwards of a greedy decode; each choice reports its extra forwards
(`Choice.extra_nfe`), so `upo eval`'s NFE column is the true cost.

The trial completions ignore block order (semi-autoregressive text decoding) and cost about K
times the answer's length in forwards per decision, so the rule is meant for the built-in MDMs,
not for long text answers.

`lookahead:K:GATE:DEPTH` cuts each trial decode after DEPTH steps and compares the likelihood of
those steps only: cheaper and weaker (experiments/README.md section 3.5, "Can the trial decodes
be cut short?"). A lower GATE, which runs the full trials at fewer states, loses less for the forwards it
saves. The cells a short trial leaves open are not scored: estimating their likelihood from one
more forward made even the one-step comparison worse than max-confidence (the probe's next-step
score).

This is not a learned policy: a UPO policy sees one MDM forward per step. The rule exists because
the lookahead probe (experiments/README.md section 3.1) found that the better orders on this MDM are only found this
way, and a user who can pay the forwards should be able to have them.
"""

from __future__ import annotations

import torch

from .base import NEG_INF, Choice, Policy, StepState, top_by_score
from .rules import ArgmaxRule, confidence, one_hot_log_probs

DEFAULT_GATE = 0.99


class TrialDecode(Policy):
    deterministic = needs_mdm = True
    spelling = "lookahead:K[:GATE[:DEPTH]]"
    summary = (
        f"search: where no candidate is above GATE (default {DEFAULT_GATE}), try the K most "
        "confident ones, each finished by max-confidence (for DEPTH steps), keep the likeliest"
    )

    def __init__(self, mdm, k: int = 3, gate: float = DEFAULT_GATE, depth: int | None = None):
        if k < 1:
            raise ValueError(f"K must be at least 1, got {k}")
        if not 0.0 <= gate <= 1.0:
            raise ValueError(f"the gate must be a probability in [0, 1], got {gate}")
        if depth is not None and depth < 0:
            raise ValueError(f"DEPTH must be at least 0, got {depth}")
        self.mdm, self.k, self.gate, self.depth = mdm, k, gate, depth
        if depth is not None:
            self.name = f"lookahead:{k}:{gate:g}:{depth}"
        elif gate != DEFAULT_GATE:
            self.name = f"lookahead:{k}:{gate:g}"
        else:
            self.name = f"lookahead:{k}"
        self.finish = ArgmaxRule("confidence", confidence)

    @torch.no_grad()
    def scores_and_cost(self, state: StepState) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores [B, L], extra MDM forwards [B]). Outside decision states the scores are the
        confidences (in [0, 1]); at a decision state the tried candidates score in (2, 3], in the
        order of their completions' likelihood, so they come first, then the rest by confidence.
        Kept on the state: when the same state is asked again (a visitor that is also the
        reference, as in pre-training), the trial decodes are not run twice."""
        key = (id(self.mdm), self.k, self.gate, self.depth)
        cached = getattr(state, "_trial_decode", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        result = self._search(state)
        state._trial_decode = (key, result)
        return result

    def _search(self, state: StepState) -> tuple[torch.Tensor, torch.Tensor]:
        conf = confidence(state).masked_fill(~state.candidates, -1.0)
        scores = conf.clone()
        extra = torch.zeros(len(conf), dtype=torch.long, device=conf.device)
        decide = (conf.max(1).values < self.gate) & (state.candidates.sum(1) > 1)
        rows = decide.nonzero().squeeze(1)
        if len(rows) == 0:
            return scores, extra
        tried = top_by_score(conf[rows], state.candidates[rows], self.k)  # [R, L]
        logp = torch.log_softmax(state.logits[rows].float(), -1)
        own, digit = logp.max(-1)  # [R, L] each cell's argmax token and its log-prob
        r_idx, c_idx = tried.nonzero(as_tuple=True)  # one trial per (row, candidate)
        trial = state.tokens[rows][r_idx].clone()
        trial[torch.arange(len(c_idx), device=trial.device), c_idx] = digit[r_idx, c_idx]
        mask = None if state.attention_mask is None else state.attention_mask[rows][r_idx]
        done = state.decode(self.mdm, trial, self.finish, attention_mask=mask, max_steps=self.depth)
        value = own[r_idx, c_idx] + done.token_loglik
        best = torch.full((len(rows),), NEG_INF, device=value.device)
        best = best.scatter_reduce(0, r_idx, value, reduce="amax")
        # 2 + 1 / (1 + gap to the row's best): strictly decreasing in the gap and never underflows
        look = conf[rows] - 2.0  # untried candidates keep their confidence order, below the tried
        look[r_idx, c_idx] = 2.0 + 1.0 / (1.0 + (best[r_idx] - value))
        scores[rows] = look.masked_fill(~state.candidates[rows], -3.0)
        extra.index_add_(0, rows[r_idx], done.nfe)
        return scores, extra

    @classmethod
    def from_parameter(cls, arg: str, mdm=None) -> TrialDecode:
        """`K`, `K:GATE` or `K:GATE:DEPTH` (after `lookahead:`); ValueError naming the bad part."""
        parts = arg.split(":")
        if not arg or len(parts) > 3:
            raise ValueError("expected lookahead:K, lookahead:K:GATE or lookahead:K:GATE:DEPTH")
        try:
            k = int(parts[0])
            gate = float(parts[1]) if len(parts) >= 2 else DEFAULT_GATE
            depth = int(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise ValueError("K and DEPTH must be integers and GATE a number") from None
        return cls(mdm, k, gate, depth)

    def greedy_scores(self, state: StepState) -> torch.Tensor:
        return self.scores_and_cost(state)[0]

    def log_probs(self, state: StepState) -> torch.Tensor:
        return one_hot_log_probs(self.greedy_scores(state), state.candidates)

    def select(self, state: StepState, k: int, generator: torch.Generator | None = None) -> Choice:
        scores, extra = self.scores_and_cost(state)
        chosen = top_by_score(scores, state.candidates, k)
        return Choice(chosen, torch.zeros(len(chosen), device=chosen.device), extra)
