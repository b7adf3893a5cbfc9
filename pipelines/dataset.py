"""A converted data set on disk: its ``meta.json`` and the loader for its format."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

META_FILE = "meta.json"
FORMAT_VERSION = 1


class DatasetError(Exception):
    """A converted data set that is missing, incomplete or of an unknown format."""


@dataclass(frozen=True)
class DatasetInfo:
    root: Path
    format: str
    classes: list[str]  # the class ids (folder names)
    image_size: tuple[int, int]  # height, width
    splits: dict[str, dict[str, Any]]  # name → {"count", "sha256", ...}
    source: str
    class_names: list[str]  # what plots and reports call each class (the ids where none was known)

    @property
    def train_split(self) -> str:
        return "train"

    @property
    def eval_split(self) -> str:
        """The held-out split the monitors evaluate on."""
        for name in ("test", "val"):
            if name in self.splits:
                return name
        raise DatasetError(f"{self.root}: no test/ or val/ split to evaluate on")

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_info(root: Path) -> DatasetInfo:
    meta_path = Path(root) / META_FILE
    if not meta_path.is_file():
        raise DatasetError(f"{root}: not a converted data set (no {META_FILE}; run tools/convert.py)")
    try:
        meta = json.loads(meta_path.read_text())
        return DatasetInfo(
            root=Path(root),
            format=meta["format"],
            classes=list(meta["classes"]),
            image_size=tuple(meta["image_size"]),
            splits=meta["splits"],
            source=meta["source"],
            class_names=list(meta.get("class_names", meta["classes"])),  # none before issue 13
        )
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DatasetError(f"{meta_path}: unreadable metadata ({error})") from error


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity, e.g. a container's share), for
    the decoding threads of the FFCV and DALI backends."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
