"""Can the MDM itself find a better order than max-confidence if it may run more than once per
step? A diagnosis for experiments/README.md (section 3.1), run on the validation set (never the
test set).

At a decision state (the most confident masked cell's top-1 probability is below `--gate`), each of
the K most confident cells is tried and scored; elsewhere the rule is max-confidence. Scores:

- rollout: fill the candidate with its argmax digit, decode the rest with max-confidence, and sum
  the log max-probabilities of all cells filled (the MDM's estimate of that completion's
  likelihood); costs a whole decode per candidate. This is upo's policy `lookahead:K:GATE`
  (`upo.policies.lookahead.TrialDecode`), which the probe calls.
- next-step: fill the candidate, run the MDM once; log p(its digit) + the sum over the still-masked
  cells of their log max-probability.
- worst-drop: fill the candidate, run the MDM once; log p(its digit) + the largest fall of any
  still-masked cell's log max-probability.
- predicted-board: fill every other masked cell with its argmax digit, keep the candidate masked,
  run the MDM once; log p(candidate's digit | the rest of the predicted board).

For comparison at a similar cost without lookahead, `--best-of N` decodes N orders sampled from
softmax(confidence/0.05) and keeps, per puzzle, the completion the MDM finds most likely (what
`upo eval --pass-at N` reports as "likeliest of N").

None of these is a upo policy: the policy network sees one MDM forward per step. The probe asks
whether the information that would pick a better order is in the MDM at all, and at what cost.
No answer is used to choose; answers only score the result.

Usage: python experiments/scripts/lookahead_probe.py [--mdm DIR] [--data FILE] [--n 300] [--k 2 3]
       [--gate 0.99] [--score rollout ...] [--best-of 6] [--out FILE]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from upo.decode import unmask
from upo.evaluate import evaluate_policy, wilson_interval
from upo.io_utils import atomic_write_text
from upo.models.registry import load_mdm
from upo.policies.base import NEG_INF, Policy, top_by_score
from upo.policies.lookahead import TrialDecode
from upo.policies.rules import confidence, make_rule, one_hot_log_probs
from upo.tasks.registry import get_task

SCORES = ("rollout", "next-step", "worst-drop", "predicted-board")


class Lookahead(Policy):
    deterministic = True

    def __init__(self, mdm, k: int, gate: float, score: str):
        self.mdm, self.k, self.gate, self.score = mdm, k, gate, score
        self.name = f"lookahead-{score}-top{k}-below{gate}"
        self.extra_forwards = 0
        self.trial_decode = TrialDecode(mdm, k, gate) if score == "rollout" else None

    @torch.no_grad()
    def greedy_scores(self, state):
        if self.trial_decode is not None:
            scores, extra = self.trial_decode.scores_and_cost(state)
            self.extra_forwards += int(extra.sum())
            return scores
        conf = confidence(state).masked_fill(~state.candidates, -1.0)
        scores = conf.clone()
        decide = (conf.max(1).values < self.gate) & (state.candidates.sum(1) > 1)
        rows = decide.nonzero().squeeze(1)
        if len(rows) == 0:
            return scores
        top = top_by_score(conf[rows], state.candidates[rows], self.k)  # [R, L]
        logp = torch.log_softmax(state.logits[rows].float(), -1)
        digit = logp.argmax(-1)  # [R, L]
        r_idx, c_idx = top.nonzero(as_tuple=True)
        trial = state.tokens[rows][r_idx].clone()  # [N, L], one row per (item, candidate)
        n = torch.arange(len(c_idx))
        if self.score == "predicted-board":
            # Fill every masked cell with its argmax except the candidate: how likely is the
            # candidate's digit given the rest of the board the MDM predicts?
            still = state.masked[rows][r_idx]
            trial = torch.where(still, digit[r_idx], trial)
            trial[n, c_idx] = self.mdm.mask_id
        else:
            trial[n, c_idx] = digit[r_idx, c_idx]
        mask = None if state.attention_mask is None else state.attention_mask[rows][r_idx]
        logits, _ = self.mdm.forward(trial, mask)
        self.extra_forwards += len(c_idx)
        still = state.masked[rows][r_idx].clone()
        still[torch.arange(len(c_idx)), c_idx] = False
        after = torch.log_softmax(logits.float(), -1).amax(-1)
        before = logp.amax(-1)[r_idx]
        own = logp.amax(-1)[r_idx, c_idx]
        if self.score == "predicted-board":
            value = torch.log_softmax(logits.float(), -1)[n, c_idx, digit[r_idx, c_idx]]
        elif self.score == "next-step":
            value = own + after.masked_fill(~still, 0.0).sum(1)
        elif self.score == "worst-drop":
            value = own + (after - before).masked_fill(~still, float("inf")).amin(1).clamp_max(0.0)
        else:
            raise ValueError(self.score)
        look = torch.full_like(conf[rows], NEG_INF)
        look[r_idx, c_idx] = value
        scores[rows] = look
        return scores

    def log_probs(self, state):
        return one_hot_log_probs(self.greedy_scores(state), state.candidates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mdm", default="checkpoints/sudoku9-mdm")
    ap.add_argument("--data", default="data/sudoku9-val.jsonl")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--k", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--gate", type=float, nargs="+", default=[0.99])
    ap.add_argument("--score", nargs="+", choices=SCORES, default=list(SCORES))
    ap.add_argument(
        "--best-of",
        type=int,
        default=6,
        help="also: N orders sampled from "
        "softmax(confidence/0.05), keeping the one the MDM finds most likely",
    )
    ap.add_argument("--out", default=None, help="JSON file for the numbers (default: print only)")
    args = ap.parse_args()
    task = get_task("sudoku9")
    mdm = load_mdm(args.mdm, threads=2)
    batch = task.load(args.data).select(np.arange(args.n))
    tokens = torch.from_numpy(batch.tokens)

    def solve_rate(policy):
        out = unmask(mdm, tokens, policy).tokens.numpy()
        solved = int(task.solved(batch, out).sum())
        lo, hi = wilson_interval(solved, args.n)
        return dict(solved=solved, rate=solved / args.n, ci95=[lo, hi])

    results = {"confidence": solve_rate(make_rule("confidence"))}
    print("confidence", results["confidence"], flush=True)
    if args.best_of:
        name = f"best-of-{args.best_of}-softmax:0.05-by-likelihood"
        # The same as `upo eval --pass-at N`'s "likeliest of N" (samples with seeds 0..N-1).
        sampled = evaluate_policy(mdm, task, batch, make_rule("softmax:0.05"), pass_at=args.best_of)
        solved = int(sampled.likeliest_solved.sum())
        results[name] = dict(
            solved=solved,
            rate=solved / args.n,
            ci95=list(wilson_interval(solved, args.n)),
            extra_forwards_per_puzzle=sampled.nfe * (args.best_of - 1),
        )
        print(name, results[name], flush=True)
    for k in args.k:
        for gate, score in [(g, s) for g in args.gate for s in args.score]:
            policy = Lookahead(mdm, k, gate, score)
            res = solve_rate(policy)
            res["extra_forwards_per_puzzle"] = policy.extra_forwards / args.n
            results[policy.name] = res
            print(policy.name, res, flush=True)
    record = dict(mdm=args.mdm, data=args.data, n=args.n, results=results)
    if args.out:
        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
