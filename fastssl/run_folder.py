"""A run folder and how anything finds its way back to it: the names of its files, where it
lives for a configuration, and the paths it stores.

    runs/<name>/checkpoint.pt   the state to resume or evaluate (config and paths inside)
    runs/<name>/config.yaml     the configuration, to relaunch with ``--config``
    runs/<name>/summary.json    accuracies, time, memory, config, device, commit
    runs/<name>/metrics.jsonl   one record per logging window, evaluation and resume

Paths (the data set) are stored twice: absolute, and relative to the run folder. A reader
tries the absolute one first, then the relative one, so a run works from any directory and
keeps working when the run folder and the data set move together.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from fastssl.config import TrainConfig, to_json
from fastssl.train.checkpoint import newest_intact, write_atomic

CHECKPOINT, CONFIG, SUMMARY, METRICS = "checkpoint.pt", "config.yaml", "summary.json", "metrics.jsonl"


class RunFolderError(Exception):
    """A path that is not a run folder, a checkpoint, or a stored path that is nowhere."""


def run_dir_of(cfg: TrainConfig, recipe: str) -> Path:
    """``run.out_dir/run.name``; an empty name is ``<recipe>-<data set folder>``."""
    return cfg.run.out_dir / (cfg.run.name or f"{recipe}-{cfg.data.resolve().name}")


def checkpoint_in(path: Path) -> Path:
    """The newest intact checkpoint of a run folder (a line on stderr for each newer one
    skipped as damaged), or ``path`` itself when it is a file."""
    if path.is_dir():
        newest, skipped = newest_intact(path)
        for line in skipped:
            print(f"fastssl: {line}", file=sys.stderr)
        if newest is None and skipped:
            raise RunFolderError(f"{path}: every checkpoint in it is damaged ({skipped[0]})")
        if newest is None:
            raise RunFolderError(f"{path}: a folder without a {CHECKPOINT} (not a run folder, or no checkpoint yet)")
        return newest
    if not path.exists():
        raise RunFolderError(f"{path}: no such file or folder")
    return path


def relative_paths(cfg: TrainConfig, run_dir: Path) -> dict[str, str]:
    """The configuration's paths relative to the run folder (beside their absolute form)."""
    return {"data": os.path.relpath(cfg.data.resolve(), run_dir.resolve())}


def data_fingerprint(data: Path) -> str | None:
    """The sha256 of a converted data set's ``meta.json`` (which holds every array's
    checksum): the same data set wherever it lies; None where there is none."""
    try:
        return hashlib.sha256((data / "meta.json").read_bytes()).hexdigest()
    except OSError:
        return None


def locate(absolute: str | Path, relative: str | None, run_dir: Path, what: str = "data set") -> Path:
    """A stored path: ``absolute`` where it exists, else ``relative`` to ``run_dir``; a
    ``RunFolderError`` naming both when neither exists."""
    absolute = Path(absolute)
    if absolute.exists():
        return absolute
    if relative is not None:
        moved = run_dir / relative
        if moved.exists():
            return moved.resolve()
        raise RunFolderError(
            f"the {what} of {run_dir} is not at {absolute} nor at {moved} (relative to the run folder)"
        )
    raise RunFolderError(f"the {what} of {run_dir} is not at {absolute}")


def write_config(run_dir: Path, recipe: str, cfg: TrainConfig) -> None:
    """``config.yaml``: the recipe and every setting, for ``recipes/<recipe>.py --config
    RUN/config.yaml`` (written atomically)."""
    record = {"recipe": recipe, "relative_paths": relative_paths(cfg, run_dir), "config": to_json(cfg)}
    text = yaml.safe_dump(record, sort_keys=False, allow_unicode=True)
    write_atomic(run_dir / CONFIG, lambda temporary: temporary.write_text(text))


def read_config(path: Path, locate_data: bool = True) -> dict[str, Any]:
    """A ``config.yaml`` (a file, or the run folder holding one): its ``recipe`` and
    ``config``, with ``locate_data`` the data path located as ``locate`` does."""
    file = path / CONFIG if path.is_dir() else path
    try:
        record = yaml.safe_load(file.read_text())
    except OSError as error:
        raise RunFolderError(f"{file}: cannot read ({error.strerror or error})") from error
    except yaml.YAMLError as error:
        raise RunFolderError(f"{file}: not YAML ({str(error).splitlines()[0]})") from error
    if not isinstance(record, dict) or not {"recipe", "config"} <= record.keys() or "data" not in record["config"]:
        raise RunFolderError(f"{file}: not a fastssl config.yaml (no 'recipe' and 'config' with 'data')")
    if locate_data:
        relative = (record.get("relative_paths") or {}).get("data")
        record["config"]["data"] = str(locate(record["config"]["data"], relative, file.parent))
    return record
