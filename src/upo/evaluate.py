"""Evaluation: solve rate with a Wilson 95% interval, cell accuracy, NFE, speed, pass@N."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .decode import unmask
from .policies.base import Policy
from .tasks.base import Batch


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (well-behaved at 0 and 1)."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class PolicyResult:
    policy: str
    solve_rate: float
    solve_ci95: tuple[float, float]
    cell_acc: float
    nfe: float
    seconds: float
    items_per_s: float
    solved: np.ndarray = field(repr=False)  # per item
    outputs: np.ndarray = field(repr=False)  # [N, L] final tokens
    order: np.ndarray = field(repr=False)  # [N, L] reveal step per position
    pass_at: list[float] | None = None  # pass@1..N when evaluated with several samples

    def summary(self) -> dict:
        out = {
            "policy": self.policy,
            "solve_rate": round(self.solve_rate, 4),
            "solve_ci95": [round(self.solve_ci95[0], 4), round(self.solve_ci95[1], 4)],
            "cell_acc": round(self.cell_acc, 4),
            "nfe": round(self.nfe, 2),
            "seconds": round(self.seconds, 2),
            "items_per_s": round(self.items_per_s, 2),
        }
        if self.pass_at is not None:
            out["pass_at"] = [round(v, 4) for v in self.pass_at]
        return out


def decode_in_batches(
    mdm,
    batch: Batch,
    policy: Policy,
    batch_size: int,
    k: int = 1,
    seed: int = 0,
    token_temperature: float = 0.0,
    progress=None,
):
    """Decode every item, `batch_size` at a time. Returns (outputs, order, nfe) as numpy arrays."""
    gen = torch.Generator().manual_seed(seed)
    outs, orders, nfes = [], [], []
    for start in range(0, len(batch), batch_size):
        part = batch.select(np.arange(start, min(start + batch_size, len(batch))))
        traj = unmask(
            mdm,
            torch.from_numpy(part.tokens),
            policy,
            attention_mask=torch.from_numpy(part.attention_mask),
            k=k,
            token_temperature=token_temperature,
            generator=gen,
        )
        outs.append(traj.tokens.numpy())
        orders.append(traj.order.numpy())
        nfes.append(traj.nfe.numpy())
        if progress is not None:
            progress(len(part))
    return np.concatenate(outs), np.concatenate(orders), np.concatenate(nfes)


def pass_at_curve(solved: np.ndarray) -> list[float]:
    """solved [N items, S samples] -> unbiased pass@1..S (Chen et al. 2021 estimator)."""
    n_items, s = solved.shape
    c = solved.sum(1)
    curve = []
    for k in range(1, s + 1):
        # 1 - C(s - c, k) / C(s, k), per item
        vals = [
            1.0 if s - ci < k else 1.0 - math.comb(s - ci, k) / math.comb(s, k)
            for ci in c.astype(int)
        ]
        curve.append(float(np.mean(vals)))
    return curve


def evaluate_policy(
    mdm,
    task,
    batch: Batch,
    policy: Policy,
    batch_size: int = 64,
    k: int = 1,
    seed: int = 0,
    pass_at: int = 1,
    progress=None,
) -> PolicyResult:
    start = time.perf_counter()
    outputs, order, nfe = decode_in_batches(
        mdm, batch, policy, batch_size, k, seed, progress=progress
    )
    seconds = time.perf_counter() - start
    solved = task.solved(batch, outputs)
    cell = task.cell_acc(batch, outputs)
    curve = None
    if pass_at > 1:
        samples = [solved]
        for extra in range(1, pass_at):
            o, _, _ = decode_in_batches(
                mdm, batch, policy, batch_size, k, seed + extra, progress=progress
            )
            samples.append(task.solved(batch, o))
        curve = pass_at_curve(np.stack(samples, 1))
    return policy_result(policy.name, solved, cell, outputs, order, nfe, seconds, curve)


def policy_result(
    name: str, solved, cell, outputs, order, nfe, seconds: float, pass_at=None
) -> PolicyResult:
    """The result record of one policy from its per-item outcomes (shared with text tasks)."""
    n = len(solved)
    return PolicyResult(
        policy=name,
        solve_rate=float(solved.mean()) if n else 0.0,
        solve_ci95=wilson_interval(float(solved.sum()), n),
        cell_acc=float(cell.mean()) if n else 0.0,
        nfe=float(nfe.mean()) if n else 0.0,
        seconds=seconds,
        items_per_s=n / max(seconds, 1e-9),
        solved=solved,
        outputs=outputs,
        order=order,
        pass_at=pass_at,
    )


def markdown_table(results: list[PolicyResult]) -> str:
    has_pass = any(r.pass_at for r in results)
    head = "| policy | solve rate | 95% CI | cell acc | NFE | items/s |" + (
        " pass@N |" if has_pass else ""
    )
    sep = "|---|---|---|---|---|---|" + ("---|" if has_pass else "")
    rows = [head, sep]
    for r in results:
        lo, hi = r.solve_ci95
        row = (
            f"| {r.policy} | {100 * r.solve_rate:.1f}% | [{100 * lo:.1f}, {100 * hi:.1f}] | "
            f"{100 * r.cell_acc:.1f}% | {r.nfe:.1f} | {r.items_per_s:.1f} |"
        )
        if has_pass:
            row += f" {100 * r.pass_at[-1]:.1f}% |" if r.pass_at else " |"
        rows.append(row)
    return "\n".join(rows)
