"""One cell of a study as a job: train (or resume) its run, then its linear probe.

A cell is a normal run folder (``<study>/cells/<cell name>``), made by the recipe's own
command line, so everything that works on a run works on a cell (``--resume-from``,
``tools/report.py``, ``tools/linear_probe.py``). What it has done is read from the folder
alone, so a job that dies anywhere is picked up where the folder says:

* ``summary.json`` says finished, and ``linear.json`` holds the study's protocol: done;
* a checkpoint: the run resumes from it (``--resume-from``) — after a kill, a preemption
  or a requeue;
* neither: the run starts from its command line.

``CellJob`` is what submitit runs. Its ``checkpoint`` hook is submitit's requeue protocol:
on SLURM's time-limit or preemption signal the run writes its checkpoint (the lifecycle's
signal handling, ``fastssl/train/signals.py``), hands the signal to submitit, which calls
``checkpoint`` and requeues the same job, which resumes from that checkpoint.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastssl.run_folder import SUMMARY

LINEAR_RESULTS = "linear.json"  # tools/linear_probe.py's file in the run folder
INTERRUPTED_STATUS = 128  # a recipe stopped by a signal exits with 128 + its number, its checkpoint written


class CellFailed(Exception):
    """A cell's run or probe ended with an error (its one-line message)."""


class CellInterrupted(Exception):
    """A cell's run was stopped by a signal after writing its checkpoint: rerunning resumes it."""


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def trained(folder: Path) -> bool:
    summary = read_json(folder / SUMMARY)
    return bool(summary and summary.get("finished"))


def probed(folder: Path, protocol: str) -> bool:
    return protocol == "none" or protocol in (read_json(folder / LINEAR_RESULTS) or {})


def done(folder: Path, protocol: str) -> bool:
    return trained(folder) and probed(folder, protocol)


class _LastLines(io.TextIOBase):
    """stderr passed through, its last non-empty line kept (the recipe's one-line error)."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.last = stream, ""

    def write(self, text: str) -> int:
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            self.last = lines[-1]
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def _run(program: str, entry: Any, args: list[str]) -> None:
    """``entry(args)`` (a recipe's or a tool's main); its exit as ``CellFailed``/``CellInterrupted``."""
    tee = _LastLines(sys.stderr)
    sys.stderr = tee
    try:
        entry(args)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
        if status >= INTERRUPTED_STATUS:
            raise CellInterrupted(f"{program} stopped (status {status}) at its checkpoint: {tee.last}") from None
        if status:
            raise CellFailed(f"{program} exited with status {status}: {tee.last}") from None
    finally:
        sys.stderr = tee.stream


@dataclass
class CellJob:
    """Train cell ``folder`` with ``recipe``'s command line ``args`` (or resume it), then
    probe it by ``protocol`` (``probe_args`` the probe's extra options)."""

    recipe: str
    folder: Path
    args: list[str]
    protocol: str
    probe_args: list[str]

    def __call__(self) -> str:
        from fastssl.recipes.launch import main as recipe_main
        from fastssl.run_folder import CHECKPOINT

        if not trained(self.folder):
            resumable = any(self.folder.glob(f"{Path(CHECKPOINT).stem}*.pt"))
            args = ["--resume-from", str(self.folder), "--run.no-progress-bar"] if resumable else self.args
            _run(f"recipes/{self.recipe}.py", lambda a: recipe_main(self.recipe, a), args)
        if not probed(self.folder, self.protocol):
            _run("tools/linear_probe.py", _linear_probe_main(),
                 [str(self.folder), "--protocol", self.protocol, *self.probe_args])
        return self.folder.name

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's requeue hook: the same job again, which resumes from the folder."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def _linear_probe_main() -> Any:
    """tools/linear_probe.py's ``main`` (a script folder: the repository root on the path)."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    from tools.linear_probe import main

    return main
