"""Results table and plots of finished (or stopped) runs.

    python tools/report.py [runs/ …] [--out report]

Needs the [report] extra (matplotlib). Reads every ``summary.json`` under the given folders
(a run folder, or a folder of run folders; default ``runs/``), with ``linear.json``
(tools/linear_probe.py) and ``metrics.jsonl`` where present, and writes into ``--out``:

- ``results.md``: one row per experiment — method, data set, device, epochs, batch, kNN
  last (best), linear last (best), minutes, images/s, peak memory, n. Runs whose
  configurations differ only in ``run.seed`` (and settings that do not change what is
  trained: ``fastssl.config.BOOKKEEPING`` — name, folder, logging, evaluation, stopping,
  speed switches) are one row, reported as mean ± sample standard deviation over the n seeds. Where rows of one
  method and data set differ in other settings, a ``setting`` column names them.
- ``knn_vs_epoch.png``, ``knn_vs_time.png``, ``loss_vs_epoch.png``, ``loss_vs_time.png``:
  the student's kNN accuracy and the training loss of every run, against epochs and
  against wall-clock minutes (one panel per data set, one colour per row of the table);
- ``throughput.png``: training images/s per row.

Wall-clock time at each record is rebuilt from the log: each logged window's images
divided by its images/s, plus the evaluations' seconds. Every file is written under a
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
from typing import Any

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
    from matplotlib.figure import Figure
except ImportError as missing:
    fail(PROGRAM, f"needs the [report] extra ({missing.name or missing} is missing): pip install -e '.[report]'")

import tyro  # noqa: E402

from fastssl.export import write_text_atomic  # noqa: E402
from fastssl.train.checkpoint import write_atomic  # noqa: E402

# Settings that do not change what is trained: runs differing only in these (and the seed)
# pool (``resume`` and ``run.tensorboard`` were settings in summaries written before 2026-12).
NOT_THE_EXPERIMENT = BOOKKEEPING | {"run.seed", "resume", "run.tensorboard"}


@dataclass(frozen=True)
class ReportConfig:
    runs: tyro.conf.Positional[tuple[Path, ...]] = (Path("runs"),)  # run folders, or folders of run folders
    out: Path = Path("report")  # folder for results.md and the PNG plots


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


# --- curves from metrics.jsonl -------------------------------------------------------------


def curves(run: Run) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """{"knn": …, "loss": …} → (epochs, wall-clock minutes, values) of one run; wall clock =
    the training seconds each record carries plus the evaluations before it."""
    train = [r for r in run.records if r.get("kind") == "train"]
    steps_per_epoch = max((r["step"] for r in train), default=1)
    out: dict[str, tuple[list[float], list[float], list[float]]] = {"knn": ([], [], []), "loss": ([], [], [])}
    training, evaluating = 0.0, 0.0
    for record in run.records:
        if record.get("kind") == "train":
            training = record["train_seconds"]
            point = ("loss", record["epoch"] + record["step"] / steps_per_epoch, record.get("loss"))
        elif record.get("kind") == "eval":
            evaluating += record.get("seconds", 0.0)
            point = ("knn", record["epoch"], record.get("knn_student"))
        else:
            continue
        name, epoch, value = point
        if value is not None:
            out[name][0].append(epoch)
            out[name][1].append((training + evaluating) / 60)
            out[name][2].append(value)
    return out


def curve_figure(cells: list[Cell], name: str, against_time: bool) -> Figure:
    data_sets = sorted({c.data for c in cells})
    figure, axes = plt.subplots(1, len(data_sets), figsize=(6 * len(data_sets), 4.5), squeeze=False)
    colours = plt.get_cmap("tab20")
    styles = ("-", "--", ":")  # beyond 20 rows, colours repeat with another line style
    for index, cell in enumerate(cells):
        ax = axes[0, data_sets.index(cell.data)]
        for number, run in enumerate(cell.runs):
            epochs, minutes, ys = curves(run)[name]
            label = f"{cell.label} n={len(cell.runs)}" if number == 0 else None
            ax.plot(minutes if against_time else epochs, ys, color=colours(index % 20), linewidth=1,
                    linestyle=styles[index // 20 % 3], label=label)
    for ax, data in zip(axes[0], data_sets, strict=True):
        ax.set_title(data)
        ax.set_xlabel("wall-clock minutes" if against_time else "epoch")
        ax.set_ylabel("student kNN accuracy %" if name == "knn" else "training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
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
        figures = {f"{name}_vs_{axis}.png": curve_figure(cells, name, axis == "time")
                   for name in ("knn", "loss") for axis in ("epoch", "time")}
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
        *(f"![{name[:-4]}]({name})" for name in figures),
    ]) + "\n"
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
        for name, figure in figures.items():
            write_atomic(cfg.out / name, functools.partial(figure.savefig, format="png", dpi=110))
        write_text_atomic(cfg.out / "results.md", markdown)
    except OSError as error:
        fail(PROGRAM, f"--out {cfg.out}: cannot write ({error})")
    finally:
        plt.close("all")
    print(text)
    print(f"\nwritten: {cfg.out / 'results.md'} and {len(figures)} plots")
    return markdown


if __name__ == "__main__":
    main()
