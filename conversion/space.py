"""Free space, checked before a conversion writes anything: about how many bytes the
output will take against what its filesystem has free."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from conversion.decode import decode
from conversion.options import WriteOptions
from conversion.sources import Sample, Source, SourceError

MARGIN = 1 << 20  # labels, indices, file lists, meta.json


def needed_bytes(source: Source, format_name: str, options: WriteOptions) -> int:
    """About how many bytes OUT will take: decoded pixels for the formats that store them
    (exact for ``tensor``, whose images share the first one's size; an FFCV conversion holds
    a split's pixels twice while its .beton is written), else the source files' bytes."""
    splits = list(source.splits.values())
    if format_name == "tensor" or (format_name == "ffcv" and options.ffcv_write_mode == "raw"):
        image = first_decoded_bytes([sample for samples in splits for sample in samples], options)
        staged = max(len(samples) for samples in splits) if format_name == "ffcv" else 0
        return (sum(len(samples) for samples in splits) + staged) * image + MARGIN
    return sum(encoded_bytes(sample) for samples in splits for sample in samples) + MARGIN


def first_decoded_bytes(samples: list[Sample], options: WriteOptions) -> int:
    """The decoded size of the first of a few samples that decodes (0 if none does: the
    writer then lists the unreadable ones)."""
    if options.size is not None:
        return options.size * options.size * 3
    for sample in samples[:16]:
        try:
            return decode(sample, None, options.origin, options.max_resolution).nbytes
        except SourceError:
            continue
    return 0


def encoded_bytes(sample: Sample) -> int:
    path = getattr(sample.read, "path", None)  # a directory's file: its size, unread
    if path is not None:
        return path.stat().st_size
    data = sample.read()
    return data.nbytes if hasattr(data, "nbytes") else len(data)


def mount_point(path: Path) -> Path:
    path = path.absolute()
    while not os.path.ismount(path):
        path = path.parent
    return path


def free_space(out: Path) -> tuple[Path, int]:
    """(the mount point OUT will be written on, its free bytes)."""
    existing = next(p for p in [out.absolute(), *out.absolute().parents] if p.exists())
    return mount_point(existing), shutil.disk_usage(existing).free


def in_units(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    raise AssertionError


def check_free_space(out: Path, needed: int) -> tuple[Path, int]:
    mount, free = free_space(out)
    if needed > free:
        raise SourceError(f"{out}: not enough free space on {mount} (needed about {in_units(needed)}, "
                          f"free {in_units(free)})")
    return mount, free
