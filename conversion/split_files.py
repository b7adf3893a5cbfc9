"""The host-side files every format that keeps per-image sizes writes beside its images:
``sizes.npy``, ``labels.npy``, ``indices.npy``, ``files.txt``, and the split's meta entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conversion.decode import DecodeLog
from conversion.sources import Sample
from pipelines.checksums import sha256


def write_host_side(
    folder: Path, kept: list[Sample], sizes: list[tuple[int, int]], checksummed: tuple[str, ...],
    log: DecodeLog, samples: list[Sample],
) -> tuple[dict, tuple[int, int]]:
    """Write the kept images' sizes, labels, indices and source paths; returns the split's
    meta entry (count, the sha256 of ``checksummed``, what decoding met) and its largest
    (height, width)."""
    np.save(folder / "sizes.npy", np.array(sizes, dtype=np.int64))
    np.save(folder / "labels.npy", np.array([s.label for s in kept], dtype=np.int64))
    np.save(folder / "indices.npy", np.arange(len(kept), dtype=np.int64))
    (folder / "files.txt").write_text("\n".join(s.path for s in kept) + "\n")
    entry = {"count": len(kept), "sha256": {name: sha256(folder / name) for name in checksummed}}
    height, width = (int(v) for v in np.array(sizes).max(0))
    return {**entry, **log.entry(samples)}, (height, width)
