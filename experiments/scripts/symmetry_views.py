"""Are the built-in MDM's mistakes noise that averaging over Sudoku symmetries removes?

A Sudoku stays valid under digit relabelling, row permutations within bands and of bands, the
same for columns, and transposition; the MDM was trained on grids under all of them. Each *view*
is one fixed such symmetry: the script shows the MDM the transformed puzzle, maps its predictions
back, and averages the probabilities of V views (the first is the identity). Decoding then runs
max-confidence on the averaged predictions, so both the order and the digits come from the
ensemble, at V forwards per step. If the MDM's errors were view-dependent noise, a few views would
lift the solve rate well above max-confidence's; experiments/README.md (section 3.2) has the answer.

Usage: python experiments/scripts/symmetry_views.py [--views 1,2,4,8] [--n 300] [--out FILE]
(validation puzzles only; about 20 minutes on two threads for the default views)
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from upo.decode import unmask
from upo.evaluate import wilson_interval
from upo.io_utils import atomic_write_text
from upo.models.registry import load_mdm
from upo.policies.rules import make_rule
from upo.tasks.registry import get_task


def random_view(n: int, box: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [n*n]: view cell p shows original cell positions[p]; digits [n+1]: original
    digit d is shown as digits[d], 0 stays 0)."""
    rows = np.concatenate([b * box + rng.permutation(box) for b in rng.permutation(n // box)])
    cols = np.concatenate([s * box + rng.permutation(box) for s in rng.permutation(n // box)])
    cells = rows[:, None] * n + cols[None, :]
    if rng.random() < 0.5:
        cells = cells.T
    digits = np.concatenate([[0], 1 + rng.permutation(n)])
    return torch.from_numpy(cells.reshape(-1)), torch.from_numpy(digits)


class ViewAverage:
    """A Denoiser whose predictions are the MDM's averaged over symmetry views (features: the
    identity view's, unused by max-confidence)."""

    def __init__(self, mdm, views):
        self.mdm = mdm
        self.mask_id, self.vocab_size, self.feature_dim = (
            mdm.mask_id,
            mdm.vocab_size,
            mdm.feature_dim,
        )
        # per view: (positions, token relabelling over the whole vocabulary, inverse positions)
        self.views = []
        for positions, digits in views:
            relabel = torch.arange(self.vocab_size)  # the mask token maps to itself
            relabel[: len(digits)] = digits
            self.views.append((positions, relabel, torch.argsort(positions)))

    def fingerprint(self) -> str:
        return self.mdm.fingerprint()

    def forward(self, tokens, attention_mask):
        logps, features = [], None
        for positions, relabel, back in self.views:
            logits, feats = self.mdm.forward(relabel[tokens[:, positions]], attention_mask)
            # original digit d is the view's digit relabel[d]
            logps.append(torch.log_softmax(logits[:, back][..., relabel].float(), dim=-1))
            features = feats[:, back] if features is None else features
        return torch.logsumexp(torch.stack(logps), 0) - math.log(len(logps)), features


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mdm", default="checkpoints/sudoku9-mdm")
    ap.add_argument("--data", default="data/sudoku9-val.jsonl")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--views", default="1,2,4,8")
    ap.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    task = get_task("sudoku9")
    batch = task.load(args.data).select(np.arange(args.n))
    tokens = torch.from_numpy(batch.tokens)
    mdm = load_mdm(args.mdm)
    n, box = task.spec.n, task.spec.box_rows
    identity = (torch.arange(n * n), torch.arange(n + 1))
    record = dict(mdm=args.mdm, data=args.data, n=args.n, results=[])
    for count in [int(v) for v in args.views.split(",")]:
        views = [identity] + [
            random_view(n, box, np.random.default_rng(i)) for i in range(1, count)
        ]
        traj = unmask(ViewAverage(mdm, views), tokens, make_rule("confidence"))
        solved = task.solved(batch, traj.tokens.numpy())
        lo, hi = wilson_interval(int(solved.sum()), len(solved))
        row = dict(
            views=count,
            solve_rate=round(float(solved.mean()), 4),
            solve_ci95=[round(lo, 4), round(hi, 4)],
            nfe=round(count * float(traj.nfe.float().mean()), 1),
        )
        record["results"].append(row)
        print(row, flush=True)
    if args.out:
        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
