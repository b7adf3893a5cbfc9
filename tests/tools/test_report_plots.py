"""tools/report.py's curve plots, read from the matplotlib figures: the legend outside every
panel, one mean line and one band per group of seeds, markers on sparse curves only, no
panel for a quantity no run logged, wall-clock minutes rebuilt from the records."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

import matplotlib
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from PIL import Image

from tools import report as tool

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

EPOCHS, STEPS, EVAL_SECONDS = 4, 6, 6.0  # 4 epochs of 6 steps, logged every step; each evaluation 6 s


def metrics(seed: int, step_seconds: float, resume_after_epoch: int | None = None) -> list[dict]:
    """kNN 10·epoch + 2·seed and probe 5·epoch + seed at epochs 0–4 (5 points: sparse); a loss
    at every step (24 points: dense); ``step_seconds`` of training per step."""
    records: list[dict] = []
    for epoch in range(EPOCHS + 1):
        records.append({"kind": "eval", "epoch": epoch, "knn_student": 10.0 * epoch + 2 * seed,
                        "probe_test": 5.0 * epoch + seed, "seconds": EVAL_SECONDS})
        if epoch == resume_after_epoch:
            records.append({"kind": "resume", "epoch": epoch, "step": 0, "changes": {}, "override": False})
        if epoch < EPOCHS:
            records += [{"kind": "train", "epoch": epoch, "step": step, "images_per_s": 100.0, "loss": 5.0 - step / 10,
                         "train_seconds": (epoch * STEPS + step) * step_seconds} for step in range(1, STEPS + 1)]
    return records


def make_run(root: Path, name: str, method: str, seed: int, records: list[dict]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    config = {"data": "/data/cifar10", "optim": {"epochs": EPOCHS, "batch_size": 100},
              "run": {"seed": seed, "name": name, "out_dir": str(root)}, "method": {"temperature": 0.2}}
    summary = {"method": method, "data": "/data/cifar10", "config": config,
               "knn": {"student": {"last": 40.0, "best": 40.0}}, "wall_time_s": 60.0, "images_per_s": 100.0,
               "peak_memory_mib": 1024.0}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture
def cells(tmp_path) -> list[tool.Cell]:
    """Three seeds of mocov2 (1, 2, 3 s per step) and one simclr run resumed after epoch 2 (4 s per step)."""
    for seed in (1, 2, 3):
        make_run(tmp_path, f"moco-s{seed}", "mocov2", seed, metrics(seed, step_seconds=seed))
    make_run(tmp_path, "simclr", "simclr", 1, metrics(1, step_seconds=4, resume_after_epoch=2))
    return tool.group(tool.find_runs((tmp_path,)))


@pytest.fixture
def close_figures():
    yield
    plt.close("all")


def panel(figure: Figure, ylabel: str):
    (ax,) = [ax for ax in figure.axes if ax.get_ylabel() == ylabel]
    return ax


def line(ax, label_start: str):
    (found,) = [line for line in ax.get_lines() if line.get_label().startswith(label_start)]
    return found


@pytest.mark.usefixtures("close_figures")
def test_legend_lies_outside_every_panel_and_widens_the_image(cells):
    figure = tool.curve_figure(cells, against_time=False)
    figure.canvas.draw()
    (legend,) = figure.legends
    box = legend.get_window_extent()
    assert all(not box.overlaps(ax.get_window_extent()) for ax in figure.axes)
    assert box.x0 >= figure.bbox.x1 - 1  # beside the panels, beyond the figure's own width
    saved = io.BytesIO()
    figure.savefig(saved, format="png", dpi=50, bbox_inches="tight")
    with Image.open(saved) as image:
        assert image.width > figure.get_figwidth() * 50 * 0.99 + box.width * 0.5  # widened to take the legend in


@pytest.mark.usefixtures("close_figures")
def test_a_long_legend_goes_below_the_panels():
    figure, ax = plt.subplots()
    handles = {f"run {i}": ax.plot([0, 1], [i, i])[0] for i in range(tool.LEGEND_BESIDE + 1)}
    figure.tight_layout()
    tool.place_legend(figure, handles)
    figure.canvas.draw()
    box = figure.legends[0].get_window_extent()
    assert box.y1 <= figure.bbox.y0 + 1 and not box.overlaps(ax.get_window_extent())


@pytest.mark.usefixtures("close_figures")
def test_seeds_are_one_mean_line_in_a_band(cells):
    figure = tool.curve_figure(cells, against_time=False)
    ax = panel(figure, "student kNN accuracy %")
    assert [drawn.get_label() for drawn in ax.get_lines()] == [
        "mocov2: mean ± std over 3 seeds", "simclr"]  # one line per row of the table, not one per seed
    mean = line(ax, "mocov2")
    assert list(mean.get_xdata()) == [0, 1, 2, 3, 4]
    assert list(mean.get_ydata()) == pytest.approx([10.0 * e + 4 for e in range(5)])  # seeds' 2, 4, 6 → 4
    (band,) = ax.collections  # the single simclr run has none
    assert isinstance(band, PolyCollection)
    std = statistics.stdev([2.0, 4.0, 6.0])
    at_epoch_2 = {round(y, 6) for x, y in band.get_paths()[0].vertices if x == 2}
    assert at_epoch_2 == {round(24 - std, 6), round(24 + std, 6)}


@pytest.mark.usefixtures("close_figures")
def test_the_range_band_spans_min_to_max(cells):
    figure = tool.curve_figure(cells, against_time=False, band="range")
    ax = panel(figure, "online linear probe test %")
    assert line(ax, "mocov2").get_label() == "mocov2: mean, min–max over 3 seeds"
    (band,) = ax.collections
    assert {y for x, y in band.get_paths()[0].vertices if x == 3} == {16.0, 18.0}  # seeds 1 and 3 of 5·3 + seed


@pytest.mark.usefixtures("close_figures")
def test_sparse_curves_have_markers_and_dense_ones_do_not(cells):
    figure = tool.curve_figure(cells, against_time=False)
    for ax in figure.axes:
        for drawn in ax.get_lines():
            sparse = len(drawn.get_xdata()) <= tool.SPARSE_POINTS
            assert (drawn.get_marker() == "o") == sparse, (ax.get_ylabel(), drawn.get_label())
    assert len(line(panel(figure, "training loss"), "simclr").get_xdata()) == EPOCHS * STEPS  # dense: a line


@pytest.mark.usefixtures("close_figures")
def test_a_quantity_no_run_logged_has_no_panel(cells, tmp_path):
    figure = tool.curve_figure(cells, against_time=True)
    assert [ax.get_ylabel() for ax in figure.axes] == [
        "student kNN accuracy %", "online linear probe test %", "training loss"]  # no teacher kNN
    without_loss = [r for r in metrics(1, 1) if r["kind"] != "train"]
    make_run(tmp_path / "evals", "a", "mocov2", 1, without_loss)
    only_evals = tool.curve_figure(tool.group(tool.find_runs((tmp_path / "evals",))), against_time=False)
    assert [ax.get_ylabel() for ax in only_evals.axes] == ["student kNN accuracy %", "online linear probe test %"]
    make_run(tmp_path / "bare", "a", "mocov2", 1, [])
    assert tool.curve_figure(tool.group(tool.find_runs((tmp_path / "bare",))), against_time=False) is None


@pytest.mark.usefixtures("close_figures")
def test_the_minutes_panel_is_cumulative_wall_clock(cells):
    figure = tool.curve_figure(cells, against_time=True)
    ax = panel(figure, "student kNN accuracy %")
    assert ax.get_xlabel() == "wall-clock minutes (training + evaluation)"

    def minutes(epoch: int, step_seconds: float) -> float:  # the epochs trained and the evaluations so far
        return (epoch * STEPS * step_seconds + (epoch + 1) * EVAL_SECONDS) / 60

    # across the resume after epoch 2, train_seconds goes on from its total: nothing is counted twice
    assert list(line(ax, "simclr").get_xdata()) == pytest.approx([minutes(e, 4) for e in range(5)])
    assert list(line(ax, "mocov2").get_xdata()) == pytest.approx([minutes(e, 2) for e in range(5)])  # mean of 1, 2, 3
    loss = line(panel(figure, "training loss"), "simclr")
    assert loss.get_xdata()[STEPS - 1] == pytest.approx((STEPS * 4 + EVAL_SECONDS) / 60)  # end of epoch 0


def test_seeds_are_averaged_where_every_seed_logged():
    logged = [{"knn_student": {0: (1.0, 10.0), 1: (2.0, 20.0), 2: (3.0, 30.0)}},
              {"knn_student": {0: (1.0, 12.0), 2: (5.0, 34.0)}}]  # logged every 2 epochs, a bookkeeping setting
    series = tool.seed_series(logged, "knn_student", "std")
    assert series.epochs == [0, 2] and series.minutes == [1.0, 4.0] and series.mean == [11.0, 32.0]
    assert series.seeds == 2 and tool.seed_series(logged, "loss", "std") is None


def test_the_command_line_writes_both_curve_files_and_takes_a_band(cells, tmp_path):
    out = tmp_path / "report"
    markdown = tool.main([str(tmp_path / "moco-s1"), str(tmp_path / "simclr"), "--out", str(out), "--band", "range"])
    assert sorted(p.name for p in out.iterdir()) == ["curves_vs_epoch.png", "curves_vs_time.png", "results.md",
                                                     "throughput.png"]
    assert "min–max" in markdown and "![curves_vs_time](curves_vs_time.png)" in markdown
    bare = tmp_path / "bare"
    make_run(bare, "a", "mocov2", 1, [])
    tool.main([str(bare), "--out", str(tmp_path / "bare_report")])
    assert sorted(p.name for p in (tmp_path / "bare_report").iterdir()) == ["results.md", "throughput.png"]
