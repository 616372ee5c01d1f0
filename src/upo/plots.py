"""Figures: solve rate per policy, solve rate against difficulty, fill orders, reward curves."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .evaluate import PolicyResult, wilson_interval  # noqa: E402
from .io_utils import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())  # an interrupted run never leaves half a PNG
    return path


def solve_rate_bars(results: list[PolicyResult], path: Path, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(1.2 * len(results) + 2, 3.6))
    rates = [100 * r.solve_rate for r in results]
    # max(0, .): at a rate of exactly 0 or 1 rounding can put the bound a hair past the rate
    lo = [max(0.0, 100 * (r.solve_rate - r.solve_ci95[0])) for r in results]
    hi = [max(0.0, 100 * (r.solve_ci95[1] - r.solve_rate)) for r in results]
    ax.bar(range(len(results)), rates, yerr=[lo, hi], capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(results)), [r.policy for r in results], rotation=30, ha="right")
    ax.set_ylabel("solve rate (%) with 95% CI")
    ax.set_ylim(0, 100)
    ax.set_title(title or "solve rate per policy")
    return _save(fig, path)


def solve_rate_by_difficulty(
    results: list[PolicyResult], difficulty: np.ndarray, path: Path, label: str = "blanks"
) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    levels = np.unique(difficulty)
    for r in results:
        rates, errs = [], []
        for lv in levels:
            sel = r.solved[difficulty == lv]
            lo, hi = wilson_interval(float(sel.sum()), len(sel))
            rates.append(100 * sel.mean())
            errs.append((max(0.0, 100 * (sel.mean() - lo)), max(0.0, 100 * (hi - sel.mean()))))
        errs = np.array(errs).T
        ax.errorbar(levels, rates, yerr=errs, marker="o", capsize=2, label=r.policy)
    ax.set_xlabel(label)
    ax.set_ylabel("solve rate (%)")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=7)
    ax.set_title(f"solve rate against number of {label}")
    return _save(fig, path)


def fill_orders(results: list[PolicyResult], item: int, side: int, path: Path) -> Path:
    """One panel per policy: the step at which each cell of puzzle `item` was filled."""
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.4), squeeze=False)
    for ax, r in zip(axes[0], results):
        order = r.order[item].reshape(side, side).astype(float)
        shown = np.where(order < 0, np.nan, order)
        ax.imshow(shown, cmap="viridis")
        for (i, j), v in np.ndenumerate(order):
            if v >= 0:
                ax.text(j, i, int(v), ha="center", va="center", fontsize=6, color="white")
        ok = "solved" if r.solved[item] else "failed"
        ax.set_title(f"{r.policy} ({ok})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("fill order (step number; blank = given)")
    return _save(fig, path)


def order_text(order: np.ndarray, side: int) -> str:
    """Terminal rendering of a fill order: step numbers, '.' for givens."""
    grid = order.reshape(side, side)
    width = len(str(int(grid.max()))) if grid.max() >= 0 else 1
    return "\n".join(
        " ".join("." * width if v < 0 else str(int(v)).rjust(width) for v in row) for row in grid
    )


def ema(values, alpha: float = 0.1) -> np.ndarray:
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return np.array(out)


def reward_curves(
    curves: dict[str, list[tuple[int, float]]], path: Path, ylabel: str = "reward (EMA)"
) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, pts in curves.items():
        if pts:
            steps, vals = zip(*pts)
            ax.plot(steps, ema(vals), label=name)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return _save(fig, path)
