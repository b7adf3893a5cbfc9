"""Seconds that ``pipelines.verify`` takes on converted data sets: the fingerprint that
conversion adds, then ``full``, ``quick`` with the pass cache cleared (cold) and ``quick``
answered by the cache.

    python benchmarks/verify.py /tmp/vf/cifar10 /tmp/vf/imagenette [--repeats 3]

Nothing is written in the data folders: a data set converted before fingerprints gets
them in memory only, and the cache lives in a temporary folder. The OS page cache is left
as it is (the figures are for files it holds, as right after conversion); the median of
``--repeats`` runs is reported.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.cli import parse  # noqa: E402
from pipelines.dataset import DatasetInfo, read_info  # noqa: E402
from pipelines.verify import cache_path, fingerprint, verify  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    data: Annotated[tuple[Path, ...], tyro.conf.Positional]  # converted data sets
    repeats: int = 3  # runs per figure; the median is reported


def seconds(work: Callable[[], object], repeats: int, before: Callable[[], object] = lambda: None) -> float:
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def with_fingerprints(info: DatasetInfo) -> DatasetInfo:
    splits = {split: {**entry, **fingerprint(info.root / split, entry["sha256"])}
              for split, entry in info.splits.items()}
    return dataclasses.replace(info, splits=splits)


def clear_cache() -> None:
    cache_path().unlink(missing_ok=True)


def measure(root: Path, repeats: int) -> str:
    info = read_info(root)
    files = [root / split / name for split, entry in info.splits.items() for name in entry["sha256"]]
    sizes = {str(path.relative_to(root)): path.stat().st_size for path in files}
    largest = max(sizes, key=sizes.__getitem__)
    stamp = seconds(lambda: with_fingerprints(info), repeats)
    checked = with_fingerprints(info)
    full = seconds(lambda: verify(checked, "full"), repeats, clear_cache)
    cold = seconds(lambda: verify(checked, "quick"), repeats, clear_cache)
    verify(checked, "quick")
    cached = seconds(lambda: verify(checked, "quick"), repeats)
    return (f"{root}: {sum(sizes.values()) / 1e6:.1f} MB in {len(sizes)} files (largest {largest} "
            f"{sizes[largest] / 1e6:.1f} MB); fingerprint {stamp:.3f} s, full {full:.2f} s, "
            f"quick cold {cold:.4f} s, quick cached {cached:.4f} s")


def main() -> None:
    cfg = parse(Config, None, None, "verify.py")
    with tempfile.TemporaryDirectory() as cache_home:
        os.environ["FASTSSL_CACHE_DIR"] = cache_home
        for root in cfg.data:
            print(measure(root, cfg.repeats))


if __name__ == "__main__":
    main()
