"""The study's tables, as the seed prints them: one per data set, rows = methods (and α),
columns = transformations, each cell "top-1 (minutes / peak GB)"; top-5 beside top-1 where
the data set has many classes (NABirds); mean ± std where a cell has several seeds. Written
as Markdown and one long CSV, with a heat-map of accuracy and one of minutes per data set,
and, where the grid names the seed's table, our minutes beside the seed's.

Accuracy is the linear probe's top-1 on the test split by the grid's protocol (its last
epoch), or the kNN monitor's last where the protocol is ``none``. Minutes are the run's wall
time (training and its kNN evaluations, summed over resumes), not the probe's. Peak memory
is the run's: CUDA's peak allocated on a GPU, the process's peak RSS on the CPU (then not
comparable with the seed's GPU figures).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastssl.run_folder import SUMMARY
from fastssl.study.cells import LINEAR_RESULTS, read_json
from fastssl.study.grid import Cell, DataSet, Grid
from fastssl.study.runner import cell_folder
from fastssl.study.seed003 import SEED_TABLES

MANY_CLASSES = 100  # from this many classes on, the tables give top-5 too (NABirds: 555)


@dataclass(frozen=True)
class Result:
    """One finished cell's figures."""

    top1: float
    top5: float | None
    minutes: float
    peak_gb: float
    memory_kind: str
    device: str


def cell_result(folder: Path, protocol: str) -> Result | None:
    """The cell's figures, or None while it is not done."""
    summary = read_json(folder / SUMMARY)
    if not summary or not summary.get("finished"):
        return None
    if protocol == "none":
        knn: dict[str, Any] = next(iter(summary["knn"].values()), {})
        if "last" not in knn:
            return None
        top1, top5 = knn["last"], None
    else:
        probe = (read_json(folder / LINEAR_RESULTS) or {}).get(protocol)
        if probe is None:
            return None
        top1 = probe["test_acc"] if protocol == "fast" else probe["last"]
        top5 = probe.get("test_top5") if protocol == "fast" else probe.get("last_top5")
    return Result(top1, top5, summary["wall_time_s"] / 60, summary["peak_memory_mib"] / 1024,
                  summary["peak_memory_kind"], summary["device"])


@dataclass(frozen=True)
class Aggregate:
    """A table cell: its seeds' results pooled."""

    results: list[Result]

    def _mean(self, values: list[float]) -> tuple[float, float | None]:
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None

    @property
    def top1(self) -> tuple[float, float | None]:
        return self._mean([r.top1 for r in self.results])

    @property
    def top5(self) -> tuple[float, float | None] | None:
        values = [r.top5 for r in self.results if r.top5 is not None]
        return self._mean(values) if len(values) == len(self.results) else None

    @property
    def minutes(self) -> float:
        return statistics.fmean(r.minutes for r in self.results)

    @property
    def peak_gb(self) -> float:
        return max(r.peak_gb for r in self.results)


def _number(value: tuple[float, float | None]) -> str:
    mean, std = value
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def _classes(data: DataSet) -> int | None:
    from pipelines.dataset import DatasetError, read_info

    try:
        return read_info(data.path).num_classes
    except (DatasetError, OSError):
        return None


class StudyTables:
    """The grid's cells with their results, pooled per (data set, row, transformation)."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.cells: dict[tuple[str, str, str], list[Cell]] = {}
        self.results: dict[tuple[str, str, str], list[Result]] = {}
        for cell in grid.cells:
            key = (cell.data.key, cell.row, cell.transformation)
            self.cells.setdefault(key, []).append(cell)
            result = cell_result(cell_folder(grid, cell), grid.linear_protocol)
            if result is not None:
                self.results.setdefault(key, []).append(result)
        self.data_sets = list({cell.data.key: cell.data for cell in grid.cells}.values())

    def rows(self, data: DataSet) -> list[str]:
        return list(dict.fromkeys(row for (key, row, _) in self.cells if key == data.key))

    def aggregate(self, data: DataSet, row: str, transformation: str) -> Aggregate | None:
        results = self.results.get((data.key, row, transformation))
        return Aggregate(results) if results else None

    @property
    def complete(self) -> bool:
        return all(len(self.results.get(key, [])) == len(cells) for key, cells in self.cells.items())

    def markdown(self) -> str:
        parts = [f"# Study {self.grid.name} ({self.grid.file})", "",
                 f"Top-1 % on the test split by the {self._accuracy_name()} (minutes of the run / peak memory "
                 "in GB); mean ± std over seeds where a cell has several (n = seeds done / planned)."
                 + self._memory_note(),
                 ""]
        for data in self.data_sets:
            parts += self._data_markdown(data)
        return "\n".join(parts)

    def _accuracy_name(self) -> str:
        protocol = self.grid.linear_protocol
        if protocol == "none":
            return "kNN monitor (last evaluation)"
        if protocol == "fast":
            return "fast linear probe (L-BFGS on cached features)"
        return f"{protocol} linear protocol (last epoch)"

    def _memory_note(self) -> str:
        kinds = {(r.memory_kind, r.device) for results in self.results.values() for r in results}
        described = "; ".join(f"{kind} on {device}" for kind, device in sorted(kinds))
        return f" Peak memory: {described}." if kinds else ""

    def _data_markdown(self, data: DataSet) -> list[str]:
        top5 = (_classes(data) or 0) >= MANY_CLASSES
        lines = [f"## {data.key} ({data.path}, preset {data.preset})", "",
                 "| method | " + " | ".join(data.transformations) + " |",
                 "|---" * (len(data.transformations) + 1) + "|"]
        for row in self.rows(data):
            entries = []
            for transformation in data.transformations:
                planned = len(self.cells.get((data.key, row, transformation), []))
                cell = self.aggregate(data, row, transformation)
                if cell is None:
                    entries.append("—")
                    continue
                accuracy = _number(cell.top1)
                if top5 and cell.top5 is not None:
                    accuracy += f" / top-5 {_number(cell.top5)}"
                seeds = f", n = {len(cell.results)}/{planned}" if planned > 1 else ""
                entries.append(f"{accuracy} ({cell.minutes:.1f} min / {cell.peak_gb:.2f} GB{seeds})")
            lines.append(f"| {row} | " + " | ".join(entries) + " |")
        lines.append("")
        if data.seed_table:
            lines += self._seed_comparison(data)
        return lines

    def _seed_comparison(self, data: DataSet) -> list[str]:
        seed = SEED_TABLES[data.seed_table] if data.seed_table else {}
        lines = [f"Beside the seed's {data.seed_table} table (its GPU is not named: the ratio is against an unnamed "
                 "GPU, and ours may be another device or a shorter schedule — see the grid):", "",
                 "| method | transformation | top-1 ours | top-1 seed | minutes ours | minutes seed | seed / ours |",
                 "|---|---|---|---|---|---|---|"]
        for row in self.rows(data):
            for transformation in data.transformations:
                theirs, ours = seed.get((row, transformation)), self.aggregate(data, row, transformation)
                if theirs is None:
                    continue
                top1 = _number(ours.top1) if ours else "—"
                minutes = f"{ours.minutes:.1f}" if ours else "—"
                seed_minutes = "—" if theirs.minutes is None else f"{theirs.minutes:.1f}"
                ratio = "—" if ours is None or theirs.minutes is None else f"{theirs.minutes / ours.minutes:.1f}×"
                lines.append(f"| {row} | {transformation} | {top1} | {theirs.top1:.1f} | {minutes} | {seed_minutes} "
                             f"| {ratio} |")
        return [*lines, ""]

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["data", "row", "transformation", "seeds_done", "seeds_planned", "top1_mean", "top1_std",
                         "top5_mean", "minutes_mean", "peak_gb_max", "memory_kind", "device",
                         "seed_top1", "seed_top5", "seed_minutes", "seed_peak_gb"])
        for data in self.data_sets:
            seed = SEED_TABLES.get(data.seed_table or "", {})
            for row in self.rows(data):
                for transformation in data.transformations:
                    cell, theirs = self.aggregate(data, row, transformation), seed.get((row, transformation))
                    planned = len(self.cells.get((data.key, row, transformation), []))
                    mine: list[Any] = ["", "", "", "", "", "", ""]
                    if cell is not None:
                        top1, std = cell.top1
                        top5 = cell.top5
                        mine = [round(top1, 2), "" if std is None else round(std, 2),
                                "" if top5 is None else round(top5[0], 2), round(cell.minutes, 2),
                                round(cell.peak_gb, 3), cell.results[0].memory_kind, cell.results[0].device]
                    seed_values = ["", "", "", ""] if theirs is None else [
                        theirs.top1, theirs.top5 or "", theirs.minutes or "", theirs.peak_gb or ""]
                    done = 0 if cell is None else len(cell.results)
                    writer.writerow([data.key, row, transformation, done, planned, *mine, *seed_values])
        return out.getvalue()

    def heatmaps(self, folder: Path) -> list[Path]:
        """Per data set, a heat-map of top-1 and one of minutes (PNG); the files written."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        written = []
        for data in self.data_sets:
            rows = self.rows(data)
            for quantity, label, colours in (("top1", "top-1 %", "viridis"), ("minutes", "minutes", "magma_r")):
                values = [[self._value(data, row, t, quantity) for t in data.transformations] for row in rows]
                figure, axes = plt.subplots(figsize=(1.4 * len(data.transformations) + 3, 0.5 * len(rows) + 1.8))
                image = axes.imshow(values, cmap=colours, aspect="auto")
                axes.set_xticks(range(len(data.transformations)), data.transformations)
                axes.set_yticks(range(len(rows)), rows)
                for i, line in enumerate(values):
                    for j, value in enumerate(line):
                        axes.text(j, i, "—" if math.isnan(value) else f"{value:.1f}", ha="center", va="center",
                                  color=label_colour(image, value), fontsize=9)
                figure.colorbar(image, ax=axes, label=label)
                axes.set_title(f"{self.grid.name}: {data.key}, {label}")
                path = folder / f"heatmap-{data.key}-{quantity}.png"
                figure.savefig(path, dpi=120, bbox_inches="tight")
                plt.close(figure)
                written.append(path)
        return written

    def _value(self, data: DataSet, row: str, transformation: str, quantity: str) -> float:
        cell = self.aggregate(data, row, transformation)
        if cell is None:
            return math.nan
        return cell.top1[0] if quantity == "top1" else cell.minutes


def label_colour(image: Any, value: float) -> str:
    """Black on a light cell, white on a dark one (by the colour's relative luminance), black
    on an empty one (the axes' white)."""
    if math.isnan(value):
        return "black"
    red, green, blue, _ = image.cmap(image.norm(value))
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.45 else "white"


def write_tables(grid: Grid) -> StudyTables:
    """``<study>/tables/``: study.md, study.csv and the heat-maps, each written whole under a
    temporary name and renamed (a reader never sees half a table)."""
    from fastssl.export import write_text_atomic

    tables = StudyTables(grid)
    folder = grid.folder / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "study.md", tables.markdown())
    write_text_atomic(folder / "study.csv", tables.csv())
    tables.heatmaps(folder)
    return tables
