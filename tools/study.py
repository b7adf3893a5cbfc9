"""A whole study as one command: every cell of a grid trained, probed and tabulated.

    python tools/study.py GRID.toml                     # run what is not done, then the tables
    python tools/study.py GRID.toml --retry-failed      # also rerun the cells that failed
    python tools/study.py GRID.toml --status            # each cell's state, nothing run
    python tools/study.py GRID.toml --tables-only       # the tables from what is done

The grid (``fastssl/study/grid.py`` documents its keys; ``configs/study/`` has the seed-003
study and a small ImageNette one) names methods, view transformations, data sets, VICRegL's
α values, seeds and overrides per axis. Each cell is a normal run folder under
``<out_dir>/<name>/cells/``; cells go through submitit — a SLURM array job where ``sbatch``
exists (``--executor slurm``; each job requeues itself on preemption), else one process per
visible GPU at a time on this machine (one at a time on the CPU). Rerunning the command
skips what is done and resumes what was cut off; it never re-runs a finished cell.
Interrupting the command (Ctrl-C, a kill) leaves every cell resumable.

Writes ``<out_dir>/<name>/tables/``: ``study.md`` (one table per data set, "top-1 (minutes /
peak GB)"), ``study.csv`` and a heat-map of accuracy and of minutes per data set; and
``commands.txt``, each cell's recipe command line. Exit status 0 when every cell is done (or,
on SLURM, submitted), 1 when some failed (listed with their error), 2 for a bad grid.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not this folder

import tyro  # noqa: E402

from fastssl.cli import fail, parse  # noqa: E402

PROGRAM = "study.py"


@dataclass(frozen=True)
class StudyOptions:
    grid: tyro.conf.Positional[Path]  # the grid file (TOML)
    executor: Literal["auto", "local", "slurm", "debug"] = "auto"
    """auto: SLURM where sbatch exists, else local (submitit's executors; debug runs each cell in this process)."""
    retry_failed: bool = False  # rerun the cells that failed before (else they are listed and skipped)
    status: bool = False  # print each cell's state and stop
    tables_only: bool = False  # write the tables from the cells done so far, run nothing


def main(args: list[str] | None = None) -> int:
    options = parse(StudyOptions, None, args, PROGRAM)
    from fastssl.recipes import names
    from fastssl.study.grid import GridError, read_grid
    from fastssl.study.runner import check_recipes, describe, job_for, run_study
    from fastssl.study.tables import write_tables

    try:
        grid = read_grid(options.grid, names())
        check_recipes(grid)
    except GridError as error:
        fail(PROGRAM, error)
    if options.status:
        print(describe(grid))
        return 0
    if not options.tables_only:
        import shlex

        try:
            import submitit  # noqa: F401
        except ImportError:
            fail(PROGRAM, "the study runner needs submitit: pip install -e '.[study]'")
        grid.folder.mkdir(parents=True, exist_ok=True)
        commands = []
        for cell in grid.cells:
            job = job_for(grid, cell)
            commands.append(f"{cell.name}: python recipes/{job.recipe}.py {shlex.join(job.args)}")
        (grid.folder / "commands.txt").write_text("\n".join(commands) + "\n")
        print(f"{PROGRAM}: {len(grid.cells)} cells in {grid.folder}", flush=True)

        def rewrite_tables() -> None:
            write_tables(grid)

        outcome = run_study(grid, options.executor, options.retry_failed, on_change=rewrite_tables,
                            log=lambda line: print(f"{PROGRAM}: {line}", flush=True))
    tables = write_tables(grid)
    print(f"{PROGRAM}: tables in {grid.folder / 'tables'}" + ("" if tables.complete else " (incomplete)"))
    if options.tables_only:
        return 0
    if outcome.failed:
        print(f"{PROGRAM}: {len(outcome.failed)} cells failed:", file=sys.stderr)
        for name, message in outcome.failed.items():
            print(f"  {name}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
