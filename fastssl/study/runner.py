"""Run a study's cells through submitit: SLURM where the machine has it, else one process per
cell on this machine.

submitit's local executor starts every job it is given at once and hands each the first GPUs,
so the runner keeps at most one cell per visible GPU in flight (one at a time on the CPU) and
pins each to its own GPU (``visible_gpus``). On SLURM every pending cell is submitted at once
as one array job (``slurm_array_parallelism`` bounds how many run together) and the runner
returns; each job requeues itself on preemption or at its time limit (``CellJob.checkpoint``).

Cells already done are skipped; cells that failed before are listed with their error and
skipped unless ``retry_failed``. A failure is written to ``<cell>/study-error.json`` (its
message and the job's log files) and cleared when the cell is done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastssl.study.cells import CellFailed, CellInterrupted, CellJob, done, read_json
from fastssl.study.grid import Cell, Grid, GridError, every_view_args, option_args, transformation_args

ERROR_FILE = "study-error.json"
EXECUTORS = ("auto", "local", "slurm", "debug")


def cells_folder(grid: Grid) -> Path:
    return grid.folder / "cells"


def cell_folder(grid: Grid, cell: Cell) -> Path:
    return cells_folder(grid) / cell.name


def recipe_args(grid: Grid, cell: Cell, view_fields: list[str]) -> list[str]:
    """The recipe's command line for ``cell`` (``view_fields``: its recipe's view fields)."""
    args = ["--preset", cell.data.preset, "--data", str(cell.data.path),
            "--run.out-dir", str(cells_folder(grid)), "--run.name", cell.name, "--run.no-progress-bar"]
    if grid.convention is not None:
        args += ["--convention", grid.convention]
    args += transformation_args(cell.transformation, view_fields)
    if cell.alpha is not None:
        args += option_args("method.alpha", cell.alpha)
    for option, value in cell.overrides:
        group, _, setting = option.partition(".")
        args += every_view_args(setting, value, view_fields) if group == "views" else option_args(option, value)
    return args + option_args("run.seed", cell.seed)


def probe_args(grid: Grid) -> list[str]:
    return [] if grid.linear_epochs is None else option_args("epochs", grid.linear_epochs)


def check_recipes(grid: Grid) -> None:
    """``GridError`` for a data set's preset or the grid's convention that a method lacks."""
    from fastssl.recipes import get

    for cell in grid.cells:
        recipe = get(cell.method)
        if cell.data.preset not in recipe.presets:
            raise GridError(f"{grid.file}: data.{cell.data.key}: {cell.method} has no preset '{cell.data.preset}' "
                            f"(presets: {', '.join(recipe.presets)})")
        if grid.convention is not None and grid.convention not in recipe.conventions:
            raise GridError(f"{grid.file}: convention: {cell.method} has no convention '{grid.convention}' "
                            f"(conventions: {', '.join(recipe.conventions) or 'none'})")


def job_for(grid: Grid, cell: Cell) -> CellJob:
    from fastssl.config import view_fields
    from fastssl.recipes import get

    args = recipe_args(grid, cell, view_fields(get(cell.method).presets[cell.data.preset]))
    return CellJob(cell.method, cell_folder(grid, cell), args, grid.linear_protocol, probe_args(grid))


def failure(grid: Grid, cell: Cell) -> dict[str, Any] | None:
    """The recorded failure of ``cell``, if it failed and is not done since."""
    return read_json(cell_folder(grid, cell) / ERROR_FILE)


def _record_failure(folder: Path, message: str, logs: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ERROR_FILE).write_text(json.dumps({"error": message, "logs": logs}, indent=1))


def visible_gpus() -> list[int]:
    """The GPUs this process sees (torch honours ``CUDA_VISIBLE_DEVICES``): one cell each."""
    import torch

    return list(range(torch.cuda.device_count()))


def executor_kind(requested: str) -> str:
    if requested != "auto":
        return requested
    return "slurm" if shutil.which("sbatch") else "local"


@dataclass
class Outcome:
    done: list[str]
    skipped: list[str]  # done before this call
    failed: dict[str, str]  # cell → error
    submitted: list[str]  # SLURM: submitted, not waited for


def run_study(grid: Grid, executor: str = "auto", retry_failed: bool = False, poll_s: float = 1.0,
              on_change: Callable[[], None] = lambda: None, log: Callable[[str], None] = print) -> Outcome:
    """Every cell of ``grid`` not yet done, through submitit (``executor``); ``on_change`` is
    called after each cell ends (to rewrite the tables)."""
    import submitit

    outcome = Outcome([], [], {}, [])
    pending: list[Cell] = []
    for cell in grid.cells:
        folder = cell_folder(grid, cell)
        if done(folder, grid.linear_protocol):
            outcome.skipped.append(cell.name)
            log(f"done before, skipped: {cell.name}")
        elif (error := failure(grid, cell)) is not None and not retry_failed:
            outcome.failed[cell.name] = error["error"]
            log(f"failed before, skipped (--retry-failed reruns it): {cell.name}: {error['error']}")
        else:
            pending.append(cell)
    kind = executor_kind(executor)
    jobs_folder = grid.folder / "submitit"
    if kind == "slurm":
        slurm = submitit.AutoExecutor(folder=jobs_folder, cluster="slurm")
        slurm.update_parameters(**{"gpus_per_node": 1, "tasks_per_node": 1, **grid.slurm})
        with slurm.batch():
            submitted = [(cell, slurm.submit(job_for(grid, cell))) for cell in pending]
        for cell, job in submitted:
            outcome.submitted.append(cell.name)
            log(f"submitted {cell.name}: SLURM job {job.job_id}")
        return outcome
    gpus = visible_gpus()
    slots: list[int | None] = list(gpus) if gpus else [None]
    running: dict[int | None, tuple[Cell, Any]] = {}
    while pending or running:
        for slot in [s for s in slots if s not in running]:
            if not pending:
                break
            cell = pending.pop(0)
            (cell_folder(grid, cell) / ERROR_FILE).unlink(missing_ok=True)
            running[slot] = (cell, _local_executor(kind, jobs_folder, slot).submit(job_for(grid, cell)))
            log(f"started {cell.name}" + ("" if slot is None else f" on GPU {slot}"))
        for slot, (cell, job) in list(running.items()):
            if kind != "debug" and not job.done():
                continue
            del running[slot]
            _collect(grid, cell, job, outcome, log)
            on_change()
        if running:
            time.sleep(poll_s)
    return outcome


def _local_executor(kind: str, folder: Path, gpu: int | None) -> Any:
    import submitit

    if kind == "debug":
        return submitit.DebugExecutor(folder=folder)
    executor = submitit.LocalExecutor(folder=folder)
    # No time limit of its own: a cell runs as long as its schedule (submitit's default is 5 minutes).
    executor.update_parameters(timeout_min=60 * 24 * 30, gpus_per_node=0 if gpu is None else 1,
                               visible_gpus=() if gpu is None else (gpu,))
    return executor


def _collect(grid: Grid, cell: Cell, job: Any, outcome: Outcome, log: Callable[[str], None]) -> None:
    try:
        job.result()
    except Exception as error:  # submitit wraps the job's exception with its traceback
        message = _last_line(error)
        logs = [str(p) for p in (getattr(job.paths, "stdout", None), getattr(job.paths, "stderr", None)) if p]
        if CellInterrupted.__name__ in str(error):
            log(f"interrupted, resumes on the next call: {cell.name}: {message}")
            return
        _finish_failed(grid, cell, message, logs, outcome, log)
        return
    outcome.done.append(cell.name)
    log(f"done: {cell.name}")


def _finish_failed(grid: Grid, cell: Cell, message: str, logs: list[str], outcome: Outcome,
                   log: Callable[[str], None]) -> None:
    _record_failure(cell_folder(grid, cell), message, logs)
    outcome.failed[cell.name] = message
    log(f"FAILED: {cell.name}: {message}" + (f" (log: {logs[-1]})" if logs else ""))


def _last_line(error: BaseException) -> str:
    """The last meaningful line of a job's exception (submitit's holds the remote traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        for name in (CellFailed.__name__, CellInterrupted.__name__):
            if line.startswith(f"fastssl.study.cells.{name}: ") or line.startswith(f"{name}: "):
                return line.split(": ", 1)[1]
    return lines[-1] if lines else type(error).__name__


def describe(grid: Grid) -> str:
    """A line per cell: its state (done / failed / partial / new)."""
    rows = []
    for cell in grid.cells:
        folder = cell_folder(grid, cell)
        if done(folder, grid.linear_protocol):
            state = "done"
        elif (error := failure(grid, cell)) is not None:
            state = f"failed: {error['error']}"
        elif any(folder.glob("checkpoint*.pt")):
            state = "partial (resumes)"
        else:
            state = "new"
        rows.append(f"{cell.name}: {state}")
    return os.linesep.join(rows)
