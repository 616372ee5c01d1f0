"""The figures: solve rate against NFE (labels readable, one legend entry per family), one decode
as a grid (wrong cells marked), a training run's curves, and the commands that draw them
(`upo plot DIR`, `upo eval --plot`). Each figure is checked through the matplotlib objects it
is made of, before it is saved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from upo import plots
from upo.cli import main
from upo.errors import UpoError

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG"


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plots module saves, kept open for inspection."""
    kept = []
    save = plots._save

    def keep(fig, path, layout=True):
        fig.canvas.draw()
        kept.append(fig)
        # the text alone, not an annotation's leader line
        boxes = [Text.get_window_extent(t) for t in texts(fig)]
        result = save(fig, path, layout)
        kept[-1].boxes = boxes
        return result

    monkeypatch.setattr(plots, "_save", keep)
    return kept


def texts(fig) -> list:
    return [t for ax in fig.axes for t in ax.texts if t.get_text()]


POINTS = [
    {"label": "random", "family": "hand rule", "nfe": 56, "solve_rate": 0.0, "ci95": [0, 0.004]},
    {"label": "margin", "family": "hand rule", "nfe": 56, "solve_rate": 0.492, "ci95": [0.461, 0.523]},
    {"label": "confidence", "family": "hand rule", "nfe": 56, "solve_rate": 0.513, "ci95": [0.482, 0.544]},
    {"label": "entropy", "family": "hand rule", "nfe": 56, "solve_rate": 0.524, "ci95": [0.493, 0.555]},
    {"label": "sudoku9-policy", "family": "learned", "nfe": 56, "solve_rate": 0.515, "solve_ci95": [0.484, 0.546]},
    {"label": "lookahead:3", "family": "search", "nfe": 359, "solve_rate": 0.659, "ci95": [0.629, 0.688]},
    {"label": "lookahead:4:0.9", "family": "search", "nfe": 267, "solve_rate": 0.686, "ci95": [0.657, 0.714]},
]  # fmt: skip


def test_solve_rate_vs_nfe_labels_every_point_without_overlap(figures, tmp_path):
    path = plots.solve_rate_vs_nfe(POINTS, tmp_path / "pareto.png", "title", join={"search"})
    assert path.read_bytes().startswith(PNG)
    fig = figures[0]
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(p["label"] for p in POINTS)
    boxes = fig.boxes
    for i, a in enumerate(boxes):  # four labels at one NFE within 3 points: all readable
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["hand rule", "learned", "search"]
    assert "NFE" in ax.get_xlabel() and "95%" in ax.get_ylabel()
    # join={"search"}: only the search family is a curve
    styles = {c.get_label(): c.lines[0].get_linestyle() for c in ax.containers}
    assert styles == {"hand rule": "None", "learned": "None", "search": "-"}
    # error bars: the learned point's interval came from solve_ci95
    segments = [seg for coll in ax.collections for seg in coll.get_segments()]
    assert any(np.allclose(seg[:, 1], [48.4, 54.6]) for seg in segments)


def test_solve_rate_vs_nfe_log_scale_and_bad_points(figures, tmp_path):
    points = [
        {"label": f"k={k}", "family": "k", "nfe": 56 / k, "solve_rate": 0.5 / k} for k in (1, 8)
    ]
    points.append({"label": "search", "nfe": 400, "solve_rate": 0.7})
    plots.solve_rate_vs_nfe(points, tmp_path / "log.png")
    ax = figures[0].axes[0]
    assert ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["5", "10"]  # plain numbers
    with pytest.raises(UpoError, match="no points"):
        plots.solve_rate_vs_nfe([], tmp_path / "x.png")
    with pytest.raises(UpoError, match="point 0: needs numbers nfe and solve_rate"):
        plots.solve_rate_vs_nfe([{"label": "a", "nfe": "many"}], tmp_path / "x.png")


def test_decode_grid_marks_the_wrong_cells(figures, tmp_path):
    tokens = np.arange(81) % 9 + 1
    order = np.where(np.arange(81) % 3 == 0, -1, np.arange(81))
    wrong = np.zeros(81, bool)
    wrong[[1, 5, 80]] = True
    panels = [
        {"label": "confidence", "tokens": tokens, "order": order, "wrong": wrong},
        {"label": "other", "tokens": tokens, "order": order, "wrong": None},
    ]
    plots.decode_grid(panels, tmp_path / "grid.png", "one puzzle")
    fig = figures[0]
    first, second = fig.axes[0], fig.axes[1]
    red = [
        p
        for p in first.patches
        if isinstance(p, Rectangle) and p.get_edgecolor()[:3] == (214 / 255, 39 / 255, 40 / 255)
    ]
    assert sorted((int(p.get_x()), int(p.get_y())) for p in red) == [(1, 0), (5, 0), (8, 8)]
    assert first.get_title() == "confidence\n3 wrong" and second.get_title() == "other"
    digits = [t.get_text() for t in first.texts if t.get_fontsize() >= 9]
    assert len(digits) == 81  # every cell's token
    assert "step at which the cell was filled" in fig.axes[-1].get_ylabel()  # the colour bar
    with pytest.raises(UpoError, match="not a square grid"):
        plots.decode_grid([{"label": "x", "tokens": [1, 2], "order": [0, 1]}], tmp_path / "x.png")


def grpo_records(n: int = 40) -> list[dict]:
    rng = np.random.default_rng(0)
    records = [
        {
            "step": s,
            "reward_mean": float(rng.uniform(0.7, 0.9)),
            "solved_mean": float(rng.uniform(0.4, 0.6)),
        }
        for s in range(1, n + 1)
    ]
    for s in (20, 40)[: n // 20]:
        records[s - 1].update(
            val_solve_rate=0.5 + s / 1000, val_cell_acc=0.8, val_confidence_solve_rate=0.513
        )
    return records


def test_training_curves_of_a_upo_run(figures, tmp_path):
    plots.training_curves(grpo_records(), tmp_path / "curves.png", "my-run")
    fig = figures[0]
    left, right = fig.axes
    assert fig._suptitle.get_text() == "my-run: UPO (GRPO) run"
    assert [t.get_text() for t in left.get_legend().get_texts()] == [
        "reward (EMA 0.1)",
        "solved (EMA 0.1)",
    ]
    legend = [t.get_text() for t in right.get_legend().get_texts()]
    assert legend == ["learned policy (greedy)", "max-confidence, same items"]  # no cell acc
    assert [line.get_linestyle() for line in right.lines] == ["-", "--"]  # the baseline dashed
    low, high = right.get_ylim()
    assert high - low >= 10  # a 0.7-point gap is not blown up to the full height
    assert "step" in right.get_xlabel() and "solve rate (%)" in right.get_ylabel()


def test_training_curves_of_a_short_mdm_run(figures, tmp_path):
    records = [{"step": 10 * i, "loss": 2.0 / i} for i in range(1, 6)]
    plots.training_curves(records, tmp_path / "mdm.png")
    (ax,) = figures[0].axes  # no validation logged: one panel
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training loss"]  # not smoothed
    with pytest.raises(UpoError, match="no reward_mean, train_loss or loss"):
        plots.training_curves([{"step": 1, "other": 2}], tmp_path / "x.png")


def write_metrics(folder: Path, records: list, tail: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return folder


def test_read_metrics(tmp_path):
    run = write_metrics(tmp_path / "run", grpo_records(3), tail='{"step": 4, "rew')  # torn write
    assert [r["step"] for r in plots.read_metrics(run)] == [1, 2, 3]
    assert plots.read_metrics(run / "metrics.jsonl") == plots.read_metrics(run)
    with pytest.raises(UpoError, match="not found"):
        plots.read_metrics(tmp_path / "nothing")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1}\nnot json\n{"step": 3, "loss": 1}\n')
    with pytest.raises(UpoError, match="line 2 is not JSON"):
        plots.read_metrics(run)
    (run / "metrics.jsonl").write_text('[1, 2]\n{"step": 3}\n')
    with pytest.raises(UpoError, match="line 1 is not a metrics record with a step"):
        plots.read_metrics(run)
    (run / "metrics.jsonl").write_text("\n")
    with pytest.raises(UpoError, match="no metrics records yet"):
        plots.read_metrics(run)


def test_upo_plot_command(tmp_path, capsys):
    run = write_metrics(tmp_path / "run", grpo_records())
    assert main(["plot", str(run)]) == 0
    assert (run / "training_curves.png").read_bytes().startswith(PNG)
    assert f"wrote {run / 'training_curves.png'} (40 records" in capsys.readouterr().err
    assert main(["plot", str(run / "metrics.jsonl"), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes().startswith(PNG)
    # the shipped policy's own run
    assert (
        main(["plot", str(ROOT / "checkpoints/sudoku9-policy"), "--out", str(tmp_path / "s.png")])
        == 0
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["plot", "{tmp}/missing"],
            "{tmp}/missing: no such training run directory or metrics file",
        ),
        (["plot", "{tmp}"], "{tmp}/metrics.jsonl: not found"),
        (["plot", "{tmp}/run", "--out", "{tmp}"], "{tmp}: is a directory"),
    ],
)
def test_upo_plot_bad_input_is_one_line(tmp_path, capsys, argv, message):
    write_metrics(tmp_path / "run", grpo_records(2))
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("upo: error: ")
    assert message.format(tmp=tmp_path) in err


def test_upo_eval_plot_draws_every_figure(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "figures"
    argv = [
        "eval", "--task", "sudoku4", "--mdm", "checkpoints/sudoku4-mdm",
        "--data", "data/sudoku4-test.jsonl", "--n", "6",
        "--policies", "random,confidence,threshold:0.9", "--plot", str(out), "--threads", "1",
    ]  # fmt: skip
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["solve_rate.png", "solve_rate_vs_nfe.png", "solve_rate_by_blanks.png", "fill_order.png"]
    )
    assert all((out / n).read_bytes().startswith(PNG) for n in names)
