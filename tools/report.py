"""Results table and plots of finished (or stopped) runs.

    python tools/report.py [runs/ …] [--out report] [--band std|range]

Needs the [report] extra (matplotlib). Reads every ``summary.json`` under the given folders
(a run folder, or a folder of run folders; default ``runs/``), with ``linear.json``
(tools/linear_probe.py) and ``metrics.jsonl`` where present, and writes into ``--out``:

- ``results.md``: one row per experiment — method, data set, device, epochs, batch, kNN
  last (best), linear last (best), minutes, images/s, peak memory, n. Runs whose
  configurations differ only in ``run.seed`` (and settings that do not change what is
  trained: ``fastssl.config.BOOKKEEPING`` — name, folder, logging, evaluation, stopping,
  speed switches) are one row, reported as mean ± sample standard deviation over the n seeds. Where rows of one
  method and data set differ in other settings, a ``setting`` column names them.
- ``curves_vs_epoch.png``, ``curves_vs_time.png``: the curves of metrics.jsonl against
  epochs and against wall-clock minutes (time to accuracy): one row of panels per data set,
  one panel per quantity some run logged (student kNN, teacher kNN, online probe, training
  loss; none for a quantity no run has), one colour per row of the table. The seeds of a row
  are one line, their mean at the epochs every seed logged, in a band of ± 1 sample standard
  deviation (``--band range``: min–max); a curve of at most 20 points has markers; the legend
  lies outside the panels (beside them, below them when long);
- ``throughput.png``: training images/s per row.
- Where there are distilled students (runs with a ``method.teacher``), a second table: each
  beside the same student trained alone (the rows of the same data set and ``model.arch``
  without a teacher) and beside its teacher (the teacher's kNN, monitored in the same run).

Wall-clock time at each record is rebuilt from the log: the running training seconds of the
last logged window plus the evaluations' seconds (``curves``). Every file is written under a
temporary name and renamed when complete.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# The repository root replaces this script's folder on the path: tools/profile.py would
# otherwise shadow the standard library's ``profile`` module (imported by torch).
sys.path[0] = str(Path(__file__).resolve().parents[1])

from fastssl.cli import fail, parse  # noqa: E402
from fastssl.config import BOOKKEEPING, dotted  # noqa: E402

PROGRAM = "report.py"

try:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display

    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
except ImportError as missing:
    fail(PROGRAM, f"needs the [report] extra ({missing.name or missing} is missing): pip install -e '.[report]'")

import tyro  # noqa: E402

from fastssl.export import write_text_atomic  # noqa: E402
from fastssl.train.checkpoint import write_atomic  # noqa: E402

# Settings that do not change what is trained: runs differing only in these (and the seed)
# pool (``resume`` and ``run.tensorboard`` were settings in summaries written before 2026-12).
NOT_THE_EXPERIMENT = BOOKKEEPING | {"run.seed", "resume", "run.tensorboard"}

Band = Literal["std", "range"]  # around a mean curve over seeds: ± 1 sample standard deviation, or min–max


@dataclass(frozen=True)
class ReportConfig:
    runs: tyro.conf.Positional[tuple[Path, ...]] = (Path("runs"),)  # run folders, or folders of run folders
    out: Path = Path("report")  # folder for results.md and the PNG plots
    band: Band = "std"  # the band around a row's mean curve over its seeds: ± 1 sample std, or min–max


@dataclass
class Run:
    folder: Path
    summary: dict[str, Any]
    linear: dict[str, Any]  # linear.json ({} when absent)
    records: list[dict[str, Any]]  # metrics.jsonl ([] when absent)


@dataclass
class Cell:
    """The runs of one experiment (all seeds)."""

    method: str
    data: str
    config: dict[str, Any]  # flattened, the pooled settings left out
    runs: list[Run] = field(default_factory=list)
    setting: str = ""  # where it differs from the other cells of its method and data set

    @property
    def label(self) -> str:
        return self.method + (f" ({self.setting})" if self.setting else "")


class ReportError(Exception):
    pass


def read_json_file(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ReportError(f"{path}: unreadable ({error})") from error
    if not isinstance(value, dict):
        raise ReportError(f"{path}: not a JSON object")
    return value


def read_run(folder: Path) -> Run:
    summary = read_json_file(folder / "summary.json")
    for key in ("method", "data", "config", "knn"):
        if key not in summary:
            raise ReportError(f"{folder / 'summary.json'}: not a fastssl summary (no '{key}')")
    linear = read_json_file(folder / "linear.json") if (folder / "linear.json").exists() else {}
    records = []
    metrics = folder / "metrics.jsonl"
    if metrics.exists():
        for number, line in enumerate(metrics.read_text().splitlines(), 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ReportError(f"{metrics}:{number}: unreadable ({error})") from error
    return Run(folder, summary, linear, records)


def find_runs(paths: tuple[Path, ...]) -> list[Run]:
    folders: list[Path] = []
    for path in paths:
        if (path / "summary.json").is_file():
            folders.append(path)
        elif path.is_file() and (path.parent / "summary.json").is_file():  # a run's checkpoint.pt
            folders.append(path.parent)
        elif path.is_dir():
            folders += sorted(p.parent for p in path.glob("*/summary.json"))
        else:
            raise ReportError(f"{path}: no such folder")
    if not folders:
        raise ReportError(f"no summary.json in {', '.join(map(str, paths))} or the folders in it")
    unique = {folder.resolve(): folder for folder in folders}  # a folder named twice counts once
    return [read_run(folder) for folder in unique.values()]


def group(runs: list[Run]) -> list[Cell]:
    """One cell per experiment: same method and configuration but for the pooled settings;
    each cell's ``setting`` names what tells it apart from its method's other cells on the
    same data set."""
    cells: dict[str, Cell] = {}
    for run in runs:
        settings = dotted(run.summary["config"]).items()
        config = {k: json.dumps(v) for k, v in settings if k not in NOT_THE_EXPERIMENT}  # JSON text: hashable
        key = json.dumps([run.summary["method"], config], sort_keys=True)
        if key not in cells:
            cells[key] = Cell(run.summary["method"], Path(run.summary["data"]).name, config)
        cells[key].runs.append(run)
    ordered = sorted(cells.values(), key=lambda c: (c.data, c.method, json.dumps(c.config, sort_keys=True)))
    for cell in ordered:
        peers = [c for c in ordered if (c.method, c.data) == (cell.method, cell.data)]
        varying = sorted(k for k in cell.config if len({p.config.get(k) for p in peers}) > 1)
        cell.setting = ", ".join(f"{k}={cell.config[k]}" for k in varying)
    return ordered


def mean_std(values: list[float], digits: int = 2) -> str:
    """``mean ± sample std`` (n − 1), the value alone for one, ``–`` for none."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def values(cell: Cell, read: Callable[[Run], Any]) -> list[float]:
    """``read(run)`` of each run of the cell where it has a number."""
    found = []
    for run in cell.runs:
        try:
            value = read(run)
        except (KeyError, TypeError):
            continue
        if isinstance(value, int | float):
            found.append(float(value))
    return found


def partial(found: list[float], cell: Cell) -> str:
    return f" [{len(found)} of {len(cell.runs)}]" if len(found) < len(cell.runs) else ""


def last_best(cell: Cell, last: Callable[[Run], Any], best: Callable[[Run], Any]) -> str:
    lasts, bests = values(cell, last), values(cell, best)
    if not lasts:
        return "–"
    return f"{mean_std(lasts)} ({mean_std(bests)}){partial(lasts, cell)}"


def linear_text(cell: Cell) -> str:
    """Mini-SSL protocol last (best); else the fast probe, marked."""
    protocol = last_best(cell, lambda r: r.linear["mini-ssl"]["last"], lambda r: r.linear["mini-ssl"]["best"])
    if protocol != "–":
        return protocol
    fast = values(cell, lambda r: r.linear["fast"]["test_acc"])
    return f"{mean_std(fast)} (fast probe){partial(fast, cell)}" if fast else "–"


def table(cells: list[Cell]) -> str:
    with_setting = any(cell.setting for cell in cells)
    header = ["method", "data set", *(["setting"] if with_setting else []), "device", "epochs", "batch",
              "kNN last (best) %", "linear last (best) %", "minutes", "images/s", "peak memory GiB", "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---|" * with_setting + "---|" + "---:|" * 8]
    for cell in cells:
        first = cell.runs[0].summary
        config = first["config"]
        stopped = any(not run.summary.get("finished", True) for run in cell.runs)
        row = [
            cell.method, cell.data, *([cell.setting] if with_setting else []),
            f"{first.get('device', '?')} ×{first.get('processes', 1)}",
            f"{config['optim']['epochs']}{'†' if stopped else ''}", str(config["optim"]["batch_size"]),
            last_best(cell, lambda r: r.summary["knn"]["student"]["last"],
                      lambda r: r.summary["knn"]["student"]["best"]),
            linear_text(cell),
            mean_std(values(cell, lambda r: r.summary["wall_time_s"] / 60), 1),
            mean_std(values(cell, lambda r: r.summary["images_per_s"]), 0),
            mean_std(values(cell, lambda r: r.summary["peak_memory_mib"] / 1024), 2),
            str(len(cell.runs)),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def distillation_table(cells: list[Cell]) -> str | None:
    """Distilled students (kNN last %) beside the same student trained alone and beside their
    teacher; None without distilled students."""
    def arch(cell: Cell) -> str:
        return json.loads(cell.config.get("model.arch", '"resnet18"'))

    def knn(cell: Cell, network: str) -> str:
        return mean_std(values(cell, lambda r: r.summary["knn"][network]["last"]))

    def teacher(cell: Cell) -> str | None:
        return json.loads(cell.config.get("method.teacher", "null"))

    def label(cell: Cell) -> str:  # the row's label, without the architecture the table names
        setting = ", ".join(part for part in cell.setting.split(", ") if part and not part.startswith("model.arch="))
        return cell.method + (f" ({setting})" if setting else "")

    def teacher_name(path: str) -> str:  # a checkpoint by its run's folder
        return Path(path).parent.name if path.endswith(".pt") and "checkpoint" in Path(path).name else Path(path).name

    distilled = [cell for cell in cells if teacher(cell)]
    if not distilled:
        return None
    lines = ["| student | data set | method | kNN % | the same student alone: kNN % | teacher | teacher kNN % |",
             "|---|---|---|---:|---|---|---:|"]
    for cell in distilled:
        alone = [c for c in cells if c.data == cell.data and arch(c) == arch(cell) and not teacher(c)]
        alone_text = "; ".join(f"{label(c)} {knn(c, 'student')}" for c in alone) or "–"
        lines.append(f"| {arch(cell)} | {cell.data} | {label(cell)} | {knn(cell, 'student')} | {alone_text} | "
                     f"{teacher_name(str(teacher(cell)))} | {knn(cell, 'teacher')} |")
    return "\n".join(lines)


# --- curves from metrics.jsonl -------------------------------------------------------------


@dataclass(frozen=True)
class Quantity:
    key: str  # the field of a metrics.jsonl record
    kind: str  # the records that carry it: "train" or "eval"
    label: str  # the panel's y axis


QUANTITIES = (
    Quantity("knn_student", "eval", "student kNN accuracy %"),
    Quantity("knn_teacher", "eval", "teacher kNN accuracy %"),
    Quantity("probe_test", "eval", "online linear probe test %"),
    Quantity("loss", "train", "training loss"),
)
SPARSE_POINTS = 20  # a curve of at most this many points gets markers: its few points are the data, not its line
LEGEND_BESIDE = 12  # a legend of more entries goes below the panels, in columns, not beside them

# epoch → (wall-clock minutes, value); a training window's epoch is fractional (epoch + step / steps per epoch)
Curve = dict[float, tuple[float, float]]


def curves(run: Run) -> dict[str, Curve]:
    """Each quantity of ``QUANTITIES`` the run logged. Wall clock at a record = the training
    seconds of the last window logged so far plus the seconds of the evaluations so far."""
    steps_per_epoch = max((r["step"] for r in run.records if r.get("kind") == "train"), default=1)
    found: dict[str, Curve] = {}
    # No sum over resumes is needed: a window's train_seconds is the run's running total, carried
    # over a resume by the checkpoint, and a resume cuts metrics.jsonl back to the checkpoint's
    # records, so the evaluations before a resume are counted once. Time outside training and
    # evaluation (start-up, compilation before the first window) is not in the log, nor here.
    training = evaluating = 0.0
    for record in run.records:
        kind = record.get("kind")
        if kind == "train":
            training = record["train_seconds"]
            epoch = record["epoch"] + record["step"] / steps_per_epoch
        elif kind == "eval":
            evaluating += record.get("seconds", 0.0)
            epoch = record["epoch"]
        else:
            continue  # a resume event: no time, no value
        for quantity in QUANTITIES:
            value = record.get(quantity.key)
            if quantity.kind == kind and isinstance(value, int | float):
                # a later record of an epoch replaces the earlier: a resume from a checkpoint older than
                # metrics_lines did not cut the log back, and the steps trained again are logged twice
                found.setdefault(quantity.key, {})[epoch] = ((training + evaluating) / 60, float(value))
    return found


@dataclass
class Series:
    """One cell's curve of one quantity: at each epoch every seed logged, the mean over the
    seeds (of the value and of the wall-clock minutes) and the band around the mean value."""

    epochs: list[float]
    minutes: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]
    seeds: int


def seed_series(logged: list[dict[str, Curve]], key: str, band: Band) -> Series | None:
    """The cell's ``key`` curve from its runs' ``curves``: band ± 1 sample standard deviation
    (``band="std"``, as in the table) or min–max (``"range"``); None where no run has it."""
    runs = [curve[key] for curve in logged if key in curve]
    # Only the epochs every seed logged: a mean over fewer seeds would jump where one stops.
    epochs = sorted(set.intersection(*(set(run) for run in runs))) if runs else []
    if not epochs:
        return None
    minutes = np.array([[run[epoch][0] for epoch in epochs] for run in runs])
    ys = np.array([[run[epoch][1] for epoch in epochs] for run in runs])
    mean = ys.mean(axis=0)
    if band == "std" and len(runs) > 1:
        spread = ys.std(axis=0, ddof=1)
        low, high = mean - spread, mean + spread
    else:
        low, high = ys.min(axis=0), ys.max(axis=0)
    return Series(epochs, minutes.mean(axis=0).tolist(), mean.tolist(), low.tolist(), high.tolist(), len(runs))


def legend_label(cell: Cell, series: Series, band: Band, several_data_sets: bool) -> str:
    name = cell.label + (f", {cell.data}" if several_data_sets else "")
    if series.seeds == 1:
        return name
    spread = "mean ± std" if band == "std" else "mean, min–max"
    return f"{name}: {spread} over {series.seeds} seeds"


def draw(ax: Axes, series: Series, against_time: bool, style: dict[str, Any], label: str) -> Line2D:
    """The mean line (markers when sparse) and, for several seeds, its band (``fill_between``)."""
    x = series.minutes if against_time else series.epochs
    marker = "o" if len(x) <= SPARSE_POINTS else None
    (line,) = ax.plot(x, series.mean, linewidth=1.2, marker=marker, markersize=3, label=label, **style)
    if series.seeds > 1:
        ax.fill_between(x, series.low, series.high, color=style["color"], alpha=0.2, linewidth=0)
    return line


def place_legend(figure: Figure, handles: dict[str, Line2D]) -> None:
    """Outside every panel, so that it covers no curve: beside them, or below them in columns
    when long; ``bbox_inches="tight"`` on saving widens the image to take it in."""
    if len(handles) <= LEGEND_BESIDE:
        figure.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5),
                      fontsize=8, frameon=False)
    else:
        figure.legend(list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      ncols=3, fontsize=8, frameon=False)


def curve_style(index: int) -> dict[str, Any]:
    """The colour and line style of the table's row ``index``: tab20 pairs a dark and a light
    shade of each hue, so the ten dark ones come first (neighbouring rows differ in hue); beyond
    20 rows, colours repeat with another line style."""
    shade = 2 * index % 20 + 2 * index // 20 % 2
    return {"color": plt.get_cmap("tab20")(shade), "linestyle": ("-", "--", ":")[index // 20 % 3]}


def curve_figure(cells: list[Cell], against_time: bool, band: Band = "std") -> Figure | None:
    """One row of panels per data set, one panel per quantity some run of it logged (none for a
    quantity no run has), against epochs or wall-clock minutes; one colour per row of the table,
    the seeds of a row drawn as one mean line with a band. None when no run logged anything."""
    logged = [[curves(run) for run in cell.runs] for cell in cells]
    series = {(index, quantity): found for index in range(len(cells)) for quantity in QUANTITIES
              if (found := seed_series(logged[index], quantity.key, band)) is not None}
    data_sets = sorted({c.data for c in cells})
    rows = [(data, [q for q in QUANTITIES if any((i, q) in series for i, c in enumerate(cells) if c.data == data)])
            for data in data_sets]
    rows = [(data, quantities) for data, quantities in rows if quantities]
    if not rows:
        return None
    columns = max(len(quantities) for _, quantities in rows)
    figure = plt.figure(figsize=(4.5 * columns, 3.5 * len(rows)))
    grid = figure.add_gridspec(len(rows), columns)
    handles: dict[str, Line2D] = {}
    for row, (data, quantities) in enumerate(rows):
        for column, quantity in enumerate(quantities):
            ax = figure.add_subplot(grid[row, column])
            for index, cell in enumerate(cells):
                if cell.data == data and (index, quantity) in series:
                    found = series[index, quantity]
                    label = legend_label(cell, found, band, len(data_sets) > 1)
                    handles.setdefault(label, draw(ax, found, against_time, curve_style(index), label))
            ax.set_title(data)
            ax.set_xlabel("wall-clock minutes (training + evaluation)" if against_time else "epoch")
            ax.set_ylabel(quantity.label)
            ax.grid(alpha=0.3)
    figure.tight_layout()
    place_legend(figure, handles)
    return figure


def throughput_figure(cells: list[Cell]) -> Figure:
    rates = [values(c, lambda r: r.summary["images_per_s"]) for c in cells]
    figure, ax = plt.subplots(figsize=(max(4, 1.2 * len(cells)), 4))
    means = [statistics.mean(r) if r else 0 for r in rates]
    errors = [statistics.stdev(r) if len(r) > 1 else 0 for r in rates]
    ax.bar(range(len(cells)), means, yerr=errors, capsize=3, color="tab:blue")
    ax.set_xticks(range(len(cells)), [f"{c.label}\n{c.data}" for c in cells], fontsize=8)
    ax.set_ylabel("training images/s")
    ax.set_title("throughput per method")
    figure.tight_layout()
    return figure


def main(args: list[str] | None = None) -> str:
    cfg = parse(ReportConfig, ReportConfig(), args, PROGRAM)
    if cfg.out.exists() and not cfg.out.is_dir():
        fail(PROGRAM, f"--out {cfg.out}: not a folder")
    try:
        cells = group(find_runs(cfg.runs))
        text = table(cells)
        distilled = distillation_table(cells)
        curve_figures = {f"curves_vs_{axis}.png": curve_figure(cells, axis == "time", cfg.band)
                         for axis in ("epoch", "time")}
        figures = {name: figure for name, figure in curve_figures.items() if figure is not None}
        figures["throughput.png"] = throughput_figure(cells)
    except (ReportError, KeyError, TypeError) as error:
        plt.close("all")
        fail(PROGRAM, str(error) if isinstance(error, ReportError) else f"a summary or metrics record lacks {error}")
    runs = sum(len(c.runs) for c in cells)
    markdown = "\n\n".join([
        f"# Results ({runs} runs)",
        text,
        "kNN: the student's weighted kNN top-1 (k = run.knn_k), last evaluation (best). Linear: the Mini-SSL protocol "
        "(tools/linear_probe.py), last epoch (best), else the fast probe. Several seeds: mean ± sample "
        "standard deviation over n runs; [k of n]: only k runs have the figure. †: stopped before its last epoch.",
        "Curves: one line per row, the mean over its seeds at the epochs every seed logged, in a band of "
        + ("± 1 sample standard deviation" if cfg.band == "std" else "min–max") + "; wall-clock minutes are the "
        "training seconds of metrics.jsonl plus its evaluations' seconds.",
        *([] if distilled is None else [
            "## Distilled students", distilled,
            "kNN last %. Alone: the rows of the same data set and student architecture trained without a teacher; "
            "teacher: its kNN as the student's run monitored it (the same evaluation images)."]),
        *(f"![{name[:-4]}]({name})" for name in figures),
    ]) + "\n"
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
        for name, figure in figures.items():
            save = functools.partial(figure.savefig, format="png", dpi=110, bbox_inches="tight")  # legend included
            write_atomic(cfg.out / name, save)
        write_text_atomic(cfg.out / "results.md", markdown)
    except OSError as error:
        fail(PROGRAM, f"--out {cfg.out}: cannot write ({error})")
    finally:
        plt.close("all")
    print(text if distilled is None else f"{text}\n\n{distilled}")
    print(f"\nwritten: {cfg.out / 'results.md'} and {len(figures)} plots")
    return markdown


if __name__ == "__main__":
    main()
