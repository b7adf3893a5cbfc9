"""The formats a data set is converted into, one module each, shared by the converter and
the loader.

Each module pairs its writer and its reader, as an FFCV ``Field`` pairs encoding and
decoding, and declares them in one ``FORMAT``:

- ``write_split(folder, samples, options: WriteOptions) -> (meta entry, largest (h, w))``
  writes one split (``tools/convert.py`` calls it inside a temporary folder it renames
  only when every split is written and checked);
- ``round_trip_check(samples, folder, options) -> images checked`` reads a sample back and
  compares it with the source;
- ``reader(info, split, device)`` is the ``Split`` the loader streams batches from.

A module is imported only when its format is used: ``ffcv`` and ``dali`` need optional
extras, and a missing one is named with the command that installs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.dataset import DatasetError, DatasetInfo

if TYPE_CHECKING:
    import torch

# format name → the optional extra its library comes from (None: a core dependency)
EXTRAS: dict[str, str | None] = {"tensor": None, "jpeg": None, "ffcv": "ffcv", "dali": "dali"}
NAMES = tuple(EXTRAS)


@dataclass(frozen=True)
class Format:
    name: str
    reader: Callable[..., Any]  # (info, split, device) → a ``pipelines.loader.Split``
    write_split: Callable[..., tuple[dict, tuple[int, int]]]
    round_trip_check: Callable[..., int]
    resizes: bool  # stores decoded pixels, so ``--size`` can resize them
    one_size: bool  # every image of the data set must have the same size


def format_named(name: str) -> Format:
    """The format ``name``, its module imported now; a missing extra is named."""
    if name not in EXTRAS:
        raise DatasetError(f"unknown format '{name}' (known: {', '.join(NAMES)})")
    try:
        module = importlib.import_module(f"pipelines.formats.{name}")
    except ImportError as error:
        extra = EXTRAS[name]
        if extra is None:
            raise
        raise DatasetError(
            f"the {name} format needs the [{extra}] extra: pip install -e '.[{extra}]' ({error})"
        ) from error
    return module.FORMAT


def open_split(info: DatasetInfo, split: str, device: torch.device) -> Any:
    """The ``Split`` reader of one split of a converted data set."""
    if info.format not in EXTRAS:
        raise DatasetError(f"{info.root}: unknown format '{info.format}' ({', '.join(NAMES)})")
    return format_named(info.format).reader(info, split, device)
