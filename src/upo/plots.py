"""Figures: solve rate per policy and against difficulty, solve rate against NFE (the Pareto view),
one decode as a grid, and the curves of a training run.

The functions that take plain data (`solve_rate_vs_nfe`, `decode_grid`, `training_curves`) are
meant to be called from scripts too; the others draw `upo eval`'s PolicyResults. Every figure is
written atomically as a PNG and its path returned.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter  # noqa: E402

from .errors import UpoError  # noqa: E402
from .evaluate import PolicyResult, wilson_interval  # noqa: E402
from .io_utils import atomic_write_bytes  # noqa: E402

MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "h", "<", ">")
WRONG = "#d62728"  # the red wrong cells and nothing else are drawn in
GIVEN = "#e9e9e9"


def _save(fig, path: Path, layout: bool = True) -> Path:
    if layout:  # (a figure with a colorbar axes keeps its own layout)
        fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120, bbox_inches="tight", pad_inches=0.1)
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
        bars = ax.errorbar(levels, rates, yerr=errs, marker="o", ms=4, capsize=2, label=r.policy)
        for line in bars[2]:  # the intervals faint, so that the rates stay readable
            line.set_alpha(0.3)
    ax.set_xlabel(label)
    ax.set_ylabel("solve rate (%), faint bars: 95% CI")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"solve rate against number of {label}")
    return _save(fig, path)


# -- solve rate against NFE ----------------------------------------------------------------------


def solve_rate_vs_nfe(
    points: Sequence[Mapping],
    path: str | Path,
    title: str = "",
    *,
    join: bool | Collection[str] = True,
    log_x: bool | None = None,
) -> Path:
    """Solve rate against mean MDM calls per item, every point with its 95% interval and label:
    the accuracy/compute trade-off (the Pareto view) of the policies evaluated.

    points: mappings with `label` (written beside the point; default: `policy`), `family` (one
    colour and marker per family, in the legend; default: the label), `nfe` (mean MDM forward
    calls per item), `solve_rate` (a fraction, 0-1) and optionally `ci95` (or `solve_ci95`, as
    `upo eval --json` writes it): [low, high] as fractions. Extra keys are ignored, so the result
    records of `upo eval --json` are points as they are (give them a family to group them).
    join: True draws each family's points as a curve in order of NFE (a family = one rule at
    several settings); False draws points only; a collection joins only the families it names.
    log_x: NFE on a log scale; None: when the NFEs span more than a factor of 8.
    """
    if not points:
        raise UpoError("solve_rate_vs_nfe: no points to draw")
    pts = [_point(p, i) for i, p in enumerate(points)]
    families = list(dict.fromkeys(p["family"] for p in pts))
    nfes = [p["nfe"] for p in pts]
    if log_x is None:
        log_x = min(nfes) > 0 and max(nfes) / min(nfes) > 8
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    colours = plt.get_cmap("tab10")
    for i, family in enumerate(families):
        members = sorted((p for p in pts if p["family"] == family), key=lambda p: p["nfe"])
        joined = join is True or (not isinstance(join, bool) and family in join)
        x = [p["nfe"] for p in members]
        y = [100 * p["solve_rate"] for p in members]
        err = np.array([[100 * (p["solve_rate"] - p["ci"][0]), 100 * (p["ci"][1] - p["solve_rate"])]
                        for p in members]).clip(min=0).T  # fmt: skip
        ax.errorbar(
            x, y, yerr=err if len(err) else None, color=colours(i % 10),
            marker=MARKERS[i % len(MARKERS)], markersize=6, capsize=3, elinewidth=1,
            linestyle="-" if joined and len(members) > 1 else "none", label=family,
        )  # fmt: skip
    _x_limits(ax, nfes, log_x)
    top = max(100 * max(p["ci"][1] for p in pts), 10)
    ax.set_ylim(-3, min(105, top + 8))
    _label_points(fig, ax, pts)
    ax.set_xlabel("MDM forward calls per item (mean NFE" + (", log scale)" if log_x else ")"))
    ax.set_ylabel("solve rate (%), 95% Wilson interval")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title or "solve rate against forward calls", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="family")
    return _save(fig, Path(path))


def _point(p: Mapping, index: int) -> dict:
    try:
        nfe, rate = float(p["nfe"]), float(p["solve_rate"])
    except (KeyError, TypeError, ValueError):
        raise UpoError(
            f"point {index}: needs numbers nfe and solve_rate, got {dict(p)!r:.80}"
        ) from None
    ci = p.get("ci95", p.get("solve_ci95")) or (rate, rate)
    label = str(p.get("label", p.get("policy", "")))
    return {
        "label": label,
        "family": str(p.get("family") or label),
        "nfe": nfe,
        "solve_rate": rate,
        "ci": (float(ci[0]), float(ci[1])),
    }


def _x_limits(ax, nfes: list[float], log_x: bool) -> None:
    """Room on both sides, more on the right where the labels go."""
    lo, hi = min(nfes), max(nfes)
    if log_x:
        ax.set_xscale("log")
        left, right = lo / 1.4, hi * 2.2
        ax.set_xlim(left, right)
        # plain numbers at 1-2-5 steps: the default labels every minor tick as 2x10^1, ...
        decades = range(math.floor(math.log10(left)), math.ceil(math.log10(right)) + 1)
        ticks = [m * 10**e for e in decades for m in (1, 2, 5) if left <= m * 10**e <= right]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        span = hi - lo if hi > lo else max(hi, 1.0)
        ax.set_xlim(lo - 0.12 * span, hi + 0.45 * span)


def _label_points(fig, ax, pts: list[dict], fontsize: float = 7.5) -> None:
    """Write each point's label to its right; labels that would overlap are moved up (or down
    when there is no room left above) and tied to their point by a thin line."""
    fig.canvas.draw()
    to_px = ax.transData.transform
    height = fontsize * fig.dpi / 72 * 1.35
    box = ax.get_window_extent()
    placed: list[tuple[float, float, float]] = []  # x0, x1, y of the labels placed so far
    order = sorted(range(len(pts)), key=lambda i: (pts[i]["solve_rate"], pts[i]["nfe"]))
    for i in order:
        p = pts[i]
        px, py = to_px((p["nfe"], 100 * p["solve_rate"]))
        x0 = px + 9
        x1 = x0 + 0.62 * fontsize * fig.dpi / 72 * len(p["label"])
        y = py
        clash = True
        while clash:
            clash = False
            for a0, a1, ay in placed:
                if a0 < x1 and x0 < a1 and abs(ay - y) < height:
                    y = ay + height
                    clash = True
        if y > box.y1 - height / 2:  # no room above: stack below the point instead
            y = py
            while any(a0 < x1 and x0 < a1 and abs(ay - y) < height for a0, a1, ay in placed):
                y -= height
        placed.append((x0, x1, y))
        tx, ty = ax.transData.inverted().transform((x0, y))
        moved = abs(y - py) > 1
        ax.annotate(
            p["label"], (p["nfe"], 100 * p["solve_rate"]), xytext=(tx, ty), textcoords="data",
            fontsize=fontsize, va="center", ha="left",
            arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6} if moved else None,
        )  # fmt: skip


def policy_points(results: Sequence[PolicyResult], families: Sequence[str]) -> list[dict]:
    """solve_rate_vs_nfe's points for evaluated policies, one family per policy."""
    return [
        {
            "label": r.policy,
            "family": family,
            "nfe": r.nfe,
            "solve_rate": r.solve_rate,
            "ci95": r.solve_ci95,
        }
        for r, family in zip(results, families)
    ]


def policy_family(policy) -> str:
    """The family a policy is drawn in, from what its class declares (upo.policies.base.Policy):
    learned, search, parallel rule or hand rule."""
    if policy.learned:
        return "learned policy"
    if policy.needs_mdm:
        return "search (lookahead)"
    if policy.parallel:
        return "several cells per step"
    return "hand rule, one cell per step"


# -- one decode as a grid ------------------------------------------------------------------------


def decode_grid(
    panels: Sequence[Mapping],
    path: str | Path,
    title: str = "",
    *,
    box: tuple[int, int] | None = None,
    columns: int = 4,
) -> Path:
    """One decode per panel, drawn as its square grid: each filled cell coloured by the step it
    was filled at (one colour scale for every panel) with its token written in it, the given cells
    grey, the wrong cells outlined in red.

    panels: mappings with `label`, `tokens` [side*side] (the decoded grid), `order` [side*side]
    (the step each cell was filled at, -1 = given, as `upo.generate` and `Trajectory` give it),
    and optionally `wrong` [side*side] bool (e.g. decoded != solution; None: not marked).
    box: (rows, columns) of a Sudoku box, drawn with thicker lines; None: 2x2 for a 4x4 grid,
    2x3 for 6x6 and 3x3 for 9x9. columns: panels per row.
    """
    if not panels:
        raise UpoError("decode_grid: no decode to draw")
    cells = len(np.asarray(panels[0]["order"]).reshape(-1))
    side = math.isqrt(cells)
    if side * side != cells:
        raise UpoError(f"decode_grid: {cells} cells are not a square grid")
    box = box or {4: (2, 2), 6: (2, 3), 9: (3, 3)}.get(side)
    last = max(int(np.asarray(p["order"]).max()) for p in panels)
    cmap = plt.get_cmap("viridis_r")
    norm = matplotlib.colors.Normalize(vmin=0, vmax=max(last, 1))
    width = max(2.4, 0.36 * side + 0.5)
    cols = min(len(panels), columns)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols + 1.2, (width + 0.6) * rows + 0.4), squeeze=False
    )
    flat = list(axes.flat)
    for ax, panel in zip(flat, panels):
        _draw_grid(ax, panel, side, box, cmap, norm)
    for ax in flat[len(panels) :]:
        ax.set_axis_off()
    bar = fig.colorbar(
        matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=flat, shrink=0.8, pad=0.03
    )
    bar.set_label("step at which the cell was filled")
    fig.suptitle(
        (title + "\n" if title else "")
        + "colour: step filled (yellow = early); grey: given; red outline: wrong cell",
        fontsize=9,
    )
    return _save(fig, Path(path), layout=False)


def _draw_grid(ax, panel: Mapping, side: int, box, cmap, norm) -> None:
    tokens = np.asarray(panel["tokens"]).reshape(side, side)
    order = np.asarray(panel["order"]).reshape(side, side)
    wrong = panel.get("wrong")
    wrong = np.zeros((side, side), bool) if wrong is None else np.asarray(wrong).reshape(side, side)
    digit_size = 10 if side <= 9 else 7
    for (i, j), step in np.ndenumerate(order):
        colour = GIVEN if step < 0 else cmap(norm(step))
        ax.add_patch(Rectangle((j, i), 1, 1, facecolor=colour, edgecolor="white", lw=0.5))
        dark = step >= 0 and sum(colour[:3]) < 1.5
        text = str(int(tokens[i, j]))
        ax.text(
            j + 0.5, i + 0.55, text, ha="center", va="center", fontsize=digit_size,
            fontweight="bold" if step < 0 else "normal", color="white" if dark else "black",
        )  # fmt: skip
        if step >= 0:
            ax.text(
                j + 0.08, i + 0.08, str(int(step)), ha="left", va="top", fontsize=4.5,
                color="white" if dark else "0.25",
            )  # fmt: skip
    for i, j in zip(*np.nonzero(wrong)):
        ax.add_patch(Rectangle((j + 0.06, i + 0.06), 0.88, 0.88, fill=False, ec=WRONG, lw=2.2))
    if box is not None:
        for r in range(0, side + 1, box[0]):
            ax.axhline(r, color="black", lw=1.6)
        for c in range(0, side + 1, box[1]):
            ax.axvline(c, color="black", lw=1.6)
    ax.set_xlim(0, side)
    ax.set_ylim(side, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    n_wrong = int(wrong.sum())
    outcome = panel.get("outcome") or (
        "" if panel.get("wrong") is None else "no wrong cell" if not n_wrong else f"{n_wrong} wrong"
    )
    ax.set_title(panel["label"] + (f"\n{outcome}" if outcome else ""), fontsize=9)


def fill_orders(
    results: list[PolicyResult],
    item: int,
    side: int,
    path: Path,
    answers: np.ndarray | None = None,
    title: str | None = None,
) -> Path:
    """decode_grid of item `item` under each policy; with `answers` [N, L] (the reference
    solutions), cells that differ from them are marked wrong."""
    panels = []
    for r in results:
        wrong = None
        if answers is not None:
            wrong = (r.outputs[item] != answers[item]) & (r.order[item] >= 0)
        outcome = "solved" if r.solved[item] else "not solved"
        if wrong is not None and wrong.any():
            outcome += f", {int(wrong.sum())} wrong cells"
        panels.append(
            {
                "label": r.policy,
                "tokens": r.outputs[item],
                "order": r.order[item],
                "wrong": wrong,
                "outcome": outcome,
            }
        )
    return decode_grid(panels, path, title or f"item {item}: the order each policy filled it in")


def order_text(order: np.ndarray, side: int) -> str:
    """Terminal rendering of a fill order: step numbers, '.' for givens."""
    grid = order.reshape(side, side)
    width = len(str(int(grid.max()))) if grid.max() >= 0 else 1
    return "\n".join(
        " ".join("." * width if v < 0 else str(int(v)).rjust(width) for v in row) for row in grid
    )


# -- training curves -----------------------------------------------------------------------------


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


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl (a run directory or the file); one UpoError line
    naming the file and line for anything else. A torn last line (a run killed mid-write) is
    skipped, as --resume does."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise UpoError(f"{path}: not found (a training run directory holds metrics.jsonl)")
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue
            raise UpoError(f"{path}: line {number} is not JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int | float):
            raise UpoError(f"{path}: line {number} is not a metrics record with a step")
        records.append(record)
    if not records:
        raise UpoError(f"{path}: no metrics records yet")
    return records


# (main curve, its label, the x axis) by the kind of run that wrote the records
RUN_KINDS = (
    ("reward_mean", "UPO (GRPO) run", "GRPO step (one rollout round each)"),
    ("train_loss", "policy pre-training run", "optimiser step"),
    ("loss", "MDM training run", "optimiser step"),
)


NO_CURVE = "the records have no reward_mean, train_loss or loss"


def run_kind(records: Sequence[Mapping]) -> tuple[str, str, str] | None:
    """The RUN_KINDS entry whose main curve the records hold; None when they hold none."""
    return next((k for k in RUN_KINDS if any(k[0] in r for r in records)), None)


def training_curves(records: Sequence[Mapping], path: str | Path, title: str = "") -> Path:
    """The curves of a training run from its metrics records (`read_metrics`): the training
    signal (a UPO run's mean rollout reward and solve rate, a pre-training or MDM run's loss),
    raw and smoothed, and beside it every validation metric logged (a UPO run's validation solve
    rate against max-confidence's on the same items)."""
    kind = run_kind(records)
    if kind is None:
        raise UpoError(f"training_curves: {NO_CURVE}")
    key, what, xlabel = kind
    validation = _validation_series(records)
    fig, axes = plt.subplots(
        1, 2 if validation else 1, figsize=(11 if validation else 6.4, 4), squeeze=False,
        sharex=True,
    )  # fmt: skip
    ax = axes[0][0]
    main = [key, "solved_mean"] if key == "reward_mean" else [key]
    names = {
        "reward_mean": "reward",
        "solved_mean": "solved",
        "train_loss": "training loss",
        "loss": "training loss",
    }
    # Smoothing helps a long, noisy series; a short one (an MDM run logs every few hundred
    # steps) is drawn as it is, since an average of a few points mostly lags.
    smooth = len(_series(records, key)[0]) >= 30
    for i, name in enumerate(main):
        steps, values = _series(records, name)
        if not steps:
            continue
        colour = f"C{i}"
        if smooth:
            ax.plot(steps, values, color=colour, alpha=0.3, lw=0.8)
            ax.plot(steps, ema(values), color=colour, lw=1.8, label=f"{names[name]} (EMA 0.1)")
        else:
            ax.plot(steps, values, color=colour, lw=1.5, marker="o", ms=3, label=names[name])
    what_is = "each step" if key == "reward_mean" else "each record"
    how = f" (faint: {what_is}; solid: smoothed)" if smooth else ""
    if key == "reward_mean":
        ax.set_ylabel("mean over the round's rollouts")
        ax.set_title("rollouts" + how, fontsize=9)
    else:
        ax.set_ylabel("loss")
        ax.set_title("training loss" + how, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if validation:
        vax = axes[0][1]
        for i, (name, (steps, values)) in enumerate(validation.items()):
            constant = len(set(values)) == 1 and len(values) > 1
            vax.plot(
                steps, [100 * v for v in values], color=f"C{i + 2}",
                linestyle="--" if constant else "-", marker=None if constant else "o",
                markersize=4, label=VALIDATION_NAMES.get(name, name.replace("_", " ")),
            )  # fmt: skip
        # A window of at least 10 points, so that a fraction of a point does not look like a trend
        low = min(min(v) for _, v in validation.values()) * 100
        high = max(max(v) for _, v in validation.values()) * 100
        pad = max(0.0, (10 - (high - low)) / 2) + 1
        vax.set_ylim(max(-1.0, low - pad), min(101.0, high + pad))
        solve = all("solve" in name for name in validation)
        vax.set_xlabel(xlabel)
        vax.set_ylabel("validation solve rate (%)" if solve else "validation (%)")
        vax.set_title("validation, where the run logged it", fontsize=9)
        vax.tick_params(labelbottom=True)
        vax.grid(alpha=0.3)
        vax.legend(fontsize=8)
    fig.suptitle(f"{title}: {what}" if title else what, fontsize=10)
    return _save(fig, Path(path))


def _series(records, name: str) -> tuple[list[float], list[float]]:
    pairs = [
        (r["step"], r[name])
        for r in records
        if isinstance(r.get(name), int | float) and not isinstance(r.get(name), bool)
    ]
    return [s for s, _ in pairs], [float(v) for _, v in pairs]


# What the validation metrics trainers log are called in the legend.
VALIDATION_NAMES = {
    "val_solve_rate": "learned policy (greedy)",
    "val_confidence_solve_rate": "max-confidence, same items",
    "val_cell_acc": "learned policy, cell accuracy",
    "val_confidence_solved": "max-confidence",
    "val_random_solved": "random order",
    "val_confidence_cell_acc": "max-confidence, cell accuracy",
    "val_random_cell_acc": "random order, cell accuracy",
    "held_out_agreement": "agreement with the reference (held-out states)",
}


def _validation_series(records) -> dict[str, tuple[list[float], list[float]]]:
    """Validation metrics given as fractions (val_*, held_out_* in [0, 1]): the solve rates when
    any are logged (cell accuracies sit on another scale), else all of them."""
    names = dict.fromkeys(
        k for r in records for k in r if k.startswith(("val_", "held_out_"))
    )  # fmt: skip
    found = {}
    for name in names:
        steps, values = _series(records, name)
        if steps and all(0.0 <= v <= 1.0 for v in values):
            found[name] = (steps, values)
    solve = {k: v for k, v in found.items() if "solve" in k}
    return solve or found
