"""Evaluation of a policy on any task (token or text): solve rate with a Wilson 95% interval, mean
partial credit (recorded as `cell_acc`), NFE, speed, pass@N."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .decode import unmask
from .models.denoiser import Denoiser
from .policies.base import Policy
from .tasks.base import Batch, Task


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
    """One policy's evaluation: the record `upo eval --json` writes (see `summary`)."""

    policy: str
    solve_rate: float
    solve_ci95: tuple[float, float]
    partial_credit: float  # mean task.partial_credit; JSON calls it cell_acc (DESIGN.md fixes it)
    nfe: float
    seconds: float
    items_per_s: float
    solved: np.ndarray = field(repr=False)  # per item
    outputs: np.ndarray = field(repr=False)  # [N, L] final tokens
    order: np.ndarray = field(repr=False)  # [N, L] reveal step per position
    pass_at: list[float] | None = None  # pass@1..N when evaluated with several samples
    # With several samples: per item, whether the sample the MDM finds likeliest (highest
    # Trajectory.token_loglik) is solved. Unlike pass@N this needs no answer to choose.
    likeliest_solved: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> dict:
        out = {
            "policy": self.policy,
            "solve_rate": round(self.solve_rate, 4),
            "solve_ci95": [round(self.solve_ci95[0], 4), round(self.solve_ci95[1], 4)],
            "cell_acc": round(self.partial_credit, 4),
            "nfe": round(self.nfe, 2),
            "seconds": round(self.seconds, 2),
            "items_per_s": round(self.items_per_s, 2),
        }
        if self.pass_at is not None:
            out["pass_at"] = [round(v, 4) for v in self.pass_at]
        if self.likeliest_solved is not None:
            n = len(self.likeliest_solved)
            lo, hi = wilson_interval(float(self.likeliest_solved.sum()), n)
            out["likeliest_of_n"] = {
                "n": len(self.pass_at) if self.pass_at else 1,
                "solve_rate": round(float(self.likeliest_solved.mean()) if n else 0.0, 4),
                "solve_ci95": [round(lo, 4), round(hi, 4)],
            }
        return out


def decode_in_batches(
    mdm: Denoiser,
    batch: Batch,
    policy: Policy,
    batch_size: int,
    k: int = 1,
    seed: int = 0,
    token_temperature: float = 0.0,
    progress=None,
    block_size: int | None = None,
    store=None,
    store_key: str = "",
    cache: str = "none",
):
    """Decode every item, `batch_size` at a time, on the MDM's device with a generator there (on
    a GPU nothing crosses to the CPU until the final tokens). Returns (outputs, order, nfe,
    token_loglik) as numpy arrays (see `Trajectory`). With `store` (an EvalProgress), batches
    finished by an earlier, interrupted run are taken from it and new ones are added to it.
    `cache`: block-wise key/value caching (upo/cache.py), "none", "prefix" or "dual"."""
    device = mdm.device
    gen = torch.Generator(device=device).manual_seed(seed)
    batch_size = padding_safe_batch_size(mdm, batch_size)
    outs, orders, nfes, logliks = [], [], [], []
    for start in range(0, len(batch), batch_size):
        part = batch.select(np.arange(start, min(start + batch_size, len(batch))))

        def run_batch(part=part):
            # Each batch is padded to its own longest item, not the data set's: columns that are
            # padding in every row are cut before decoding and put back after.
            cut = part.trimmed()
            lead = part.tokens.shape[1] - cut.tokens.shape[1]
            traj = unmask(
                mdm,
                torch.from_numpy(cut.tokens).to(device),
                policy,
                attention_mask=torch.from_numpy(cut.attention_mask).to(device),
                k=k,
                token_temperature=token_temperature,
                block_size=block_size,
                generator=gen,
                cache=cache,
            )
            tokens, order = (x.cpu().numpy() for x in (traj.tokens, traj.order))
            if lead:
                tokens = np.concatenate([part.tokens[:, :lead], tokens], axis=1)
                order = np.concatenate([np.full((len(part), lead), -1, order.dtype), order], 1)
            return tokens, order, traj.nfe.cpu().numpy(), traj.token_loglik.cpu().numpy()

        if store is None:
            arrays = run_batch()
        else:
            arrays = store.decode(f"{store_key}b{start}", gen, run_batch)
        for kept, array in zip((outs, orders, nfes, logliks), arrays):
            kept.append(array)
        if progress is not None:
            progress(len(part))
    return tuple(np.concatenate(x) for x in (outs, orders, nfes, logliks))


def padding_safe_batch_size(mdm: Denoiser, batch_size: int) -> int:
    """`batch_size`, or 1 for a model whose logits change under left padding (an HF model whose
    padding probe failed, see models/hf.py) unless its user allowed unpadded batching."""
    if mdm.pads_batches:
        return batch_size
    return 1


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
    mdm: Denoiser,
    task: Task,
    batch: Batch,
    policy: Policy,
    batch_size: int = 64,
    k: int = 1,
    seed: int = 0,
    pass_at: int = 1,
    progress=None,
    store=None,
    store_key: str = "",
    cache: str = "none",
) -> PolicyResult:
    """Solve rate etc. of `policy`'s decodes (the first sample, seed `seed`), in the task's
    semi-autoregressive blocks (task.block_length) and scored by the task. With pass_at = N > 1
    it decodes N samples per item (seeds seed..seed+N-1) and also reports pass@1..N and the solve
    rate of the sample the MDM finds likeliest. `store`: see decode_in_batches (each sample's
    batches are filed under store_key + its number); seconds include the reused batches'.
    `cache`: see decode_in_batches."""
    start = time.perf_counter()
    reused_before = store.seconds_reused if store is not None else 0.0
    blocks = task.block_length
    outputs, order, nfe, loglik = decode_in_batches(
        mdm, batch, policy, batch_size, k, seed, progress=progress, block_size=blocks,
        store=store, store_key=f"{store_key}s0", cache=cache,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if store is not None:
        seconds += store.seconds_reused - reused_before
    solved = task.solved(batch, outputs)
    credit = task.partial_credit(batch, outputs)
    result = policy_result(policy.name, solved, credit, outputs, order, nfe, seconds)
    if pass_at > 1:
        samples, logliks = [solved], [loglik]
        for extra in range(1, pass_at):
            o, _, _, ll = decode_in_batches(
                mdm, batch, policy, batch_size, k, seed + extra, progress=progress,
                block_size=blocks, store=store, store_key=f"{store_key}s{extra}", cache=cache,
            )  # fmt: skip
            samples.append(task.solved(batch, o))
            logliks.append(ll)
        solved_by_sample = np.stack(samples, 1)
        result.pass_at = pass_at_curve(solved_by_sample)
        result.likeliest_solved = likeliest_sample_solved(solved_by_sample, np.stack(logliks, 1))
    return result


def likeliest_sample_solved(solved: np.ndarray, loglik: np.ndarray) -> np.ndarray:
    """solved, loglik [N items, S samples] -> [N] whether each item's likeliest sample is solved
    (the first of equally likely samples)."""
    return solved[np.arange(len(solved)), loglik.argmax(1)]


def policy_result(name: str, solved, credit, outputs, order, nfe, seconds: float) -> PolicyResult:
    """The result record of one policy from its per-item outcomes (solved, partial credit)."""
    n = len(solved)
    return PolicyResult(
        policy=name,
        solve_rate=float(solved.mean()) if n else 0.0,
        solve_ci95=wilson_interval(float(solved.sum()), n),
        partial_credit=float(credit.mean()) if n else 0.0,
        nfe=float(nfe.mean()) if n else 0.0,
        seconds=seconds,
        items_per_s=n / max(seconds, 1e-9),
        solved=solved,
        outputs=outputs,
        order=order,
    )


def markdown_table(results: list[PolicyResult]) -> str:
    has_pass = any(r.pass_at for r in results)
    head = "| policy | solve rate | 95% CI | cell acc | NFE | items/s |" + (
        " pass@N | likeliest of N |" if has_pass else ""
    )
    sep = "|---|---|---|---|---|---|" + ("---|---|" if has_pass else "")
    rows = [head, sep]
    for r in results:
        lo, hi = r.solve_ci95
        row = (
            f"| {r.policy} | {100 * r.solve_rate:.1f}% | [{100 * lo:.1f}, {100 * hi:.1f}] | "
            f"{100 * r.partial_credit:.1f}% | {r.nfe:.1f} | {r.items_per_s:.1f} |"
        )
        if has_pass and r.pass_at:
            row += f" {100 * r.pass_at[-1]:.1f}% | {100 * r.likeliest_solved.mean():.1f}% |"
        elif has_pass:
            row += " | |"
        rows.append(row)
    return "\n".join(rows)
