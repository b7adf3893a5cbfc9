"""Convert an image data set once into a format that streams to the accelerator.

    python tools/convert.py SOURCE OUT [--size 64] [--format tensor|jpeg|ffcv|dali]

SOURCE, a directory or a ``.tar``/``.tar.gz`` of one (a single top-level folder is fine):
an ImageFolder (``train/<class>/…`` plus ``test/`` or ``val/``, or bare ``<class>/…``),
CIFAR-10/100 python batches, STL-10 binaries (the unlabelled split with label −1),
Tiny-ImageNet's original layout (``val_annotations.txt``) or NABirds (``images.txt``,
``train_test_split.txt``). OUT is written under a temporary name and renamed when
complete, after a round-trip check that re-decodes a sample of source images and compares
them exactly with what was stored.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

# The repository root replaces this script's folder on the path: tools/profile.py would
# otherwise shadow the standard library's ``profile`` module (imported by torch).
sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import tyro  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fastssl.cli import fail, parse  # noqa: E402
from pipelines.dataset import FORMAT_VERSION, META_FILE, DatasetError  # noqa: E402
from pipelines.loader import load_backend  # noqa: E402
from pipelines.sources import Sample, SourceError, decode, read_source  # noqa: E402
from pipelines.tensor import write_split  # noqa: E402

PROGRAM = "convert.py"
# Packaging formats: each module has write_split(folder, samples, cfg) → (meta entry,
# largest (height, width)) and round_trip_check(samples, folder, cfg) → images checked.
WRITERS = {"jpeg": "pipelines.jpeg", "ffcv": "pipelines.ffcv", "dali": "pipelines.dali"}


@dataclass(frozen=True)
class ConvertConfig:
    source: Annotated[Path, tyro.conf.Positional]  # data set directory or tar archive
    out: Annotated[Path, tyro.conf.Positional]  # converted data set directory (must not exist)
    # tensor: decoded uint8 pixels (fixed size); jpeg: the source JPEG bytes, decoded per
    # batch; ffcv: an FFCV .beton ([ffcv] extra); dali: a DALI file list ([dali] extra)
    format: Literal["tensor", "jpeg", "ffcv", "dali"] = "tensor"
    size: int | None = None  # resize shorter side to SIZE, keep the centre SIZE×SIZE
    # ffcv only: store decoded pixels (raw, exact) or re-encode them as JPEG (smaller, lossy)
    ffcv_write_mode: Literal["raw", "jpg"] = "raw"
    jpeg_quality: int = 90  # ffcv --ffcv-write-mode jpg: JPEG quality, 1–100
    max_resolution: int | None = None  # ffcv only: longer side capped at this many pixels, aspect kept
    check: int = 256  # images per split re-decoded and compared exactly; 0 skips
    workers: int = os.cpu_count() or 1  # decoding processes
    overwrite: bool = False  # replace OUT if it exists


# Decoding runs in forked workers that inherit the samples instead of pickling them.
_JOB: tuple[dict[str, list[Sample]], int | None, Path] | None = None
CHUNK = 256  # images per task: small enough to balance, large enough to amortise IPC


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: only the parent handles it (and cleans up);
    # the pool stops its workers with SIGTERM, which must keep its default action.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _size_error(origin: Path, sample: Sample, shape: tuple, first: Sample, first_shape: tuple) -> str:
    return (
        f"{origin}: {sample.path} is {shape[0]}×{shape[1]} but {first.path} is "
        f"{first_shape[0]}×{first_shape[1]}; pass --size to resize every image"
    )


def _decode_range(task: tuple[str, int, int]) -> np.ndarray | str:
    """Decoded images ``start:stop`` of a split, or the one-line error for the first failure."""
    splits, size, origin = _JOB  # type: ignore[misc]
    split, start, stop = task
    samples = splits[split]
    images: list[np.ndarray] = []
    for i in range(start, stop):
        try:
            image = decode(samples[i], size, origin)
        except SourceError as error:
            return str(error)
        except Exception as error:  # noqa: BLE001 (anything else also names the file)
            return f"{origin}: cannot decode {samples[i].path} ({error})"
        if images and image.shape != images[0].shape:
            return _size_error(origin, samples[i], image.shape, samples[start], images[0].shape)
        images.append(image)
    return np.stack(images)


def decode_all(
    pool, samples: list[Sample], cfg: ConvertConfig, split: str, folder: Path, first: tuple | None
) -> tuple[int, int]:
    """Decode a split straight into ``folder/images.npy`` (memory-mapped, so a data set
    larger than memory converts); returns its image size (height, width).

    ``first`` is (sample, shape) of another split's first image, whose size this one must match."""
    if not samples:
        raise SourceError(f"{cfg.source}: split '{split}' has no images")
    tasks = [(split, i, min(i + CHUNK, len(samples))) for i in range(0, len(samples), CHUNK)]
    folder.mkdir(parents=True)
    images = None
    # A bar on terminals only: in a log or a pipe it would be noise around the result line.
    with tqdm(total=len(samples), desc=f"decode {split}", unit="img", leave=False, disable=None) as bar:
        for (_, start, stop), part in zip(tasks, pool.imap(_decode_range, tasks), strict=True):
            if isinstance(part, str):
                raise SourceError(part)
            if images is None:
                if first is not None and part.shape[1:] != first[1]:
                    raise SourceError(_size_error(cfg.source, samples[0], part.shape[1:], *first))
                first = (samples[0], part.shape[1:])
                images = np.lib.format.open_memmap(
                    folder / "images.npy", mode="w+", dtype=np.uint8, shape=(len(samples), *part.shape[1:])
                )
            elif part.shape[1:] != images.shape[1:]:
                assert first is not None  # set with images
                raise SourceError(_size_error(cfg.source, samples[start], part.shape[1:], *first))
            images[start:stop] = part
            bar.update(stop - start)
    assert images is not None and first is not None  # samples is not empty: the first part set both
    images.flush()
    del images
    return first[1][:2]


def round_trip_check(samples: list[Sample], cfg: ConvertConfig, folder: Path) -> int:
    """Re-decode a random sample of source images and compare with the stored pixels and
    labels; returns how many were checked."""
    stored = np.load(folder / "images.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    if len(stored) != len(samples) or len(labels) != len(samples):
        raise SourceError(
            f"round-trip check failed: {folder} holds {len(stored)} images, expected {len(samples)}"
        )
    count = min(cfg.check, len(samples))
    for i in np.random.default_rng(0).choice(len(samples), count, replace=False):
        again = decode(samples[i], cfg.size, cfg.source)
        if not np.array_equal(again, stored[i]) or labels[i] != samples[i].label:
            raise SourceError(f"{cfg.source}: round-trip check failed on {samples[i].path}")
    return count


def _validate(cfg: ConvertConfig) -> None:
    if cfg.format == "jpeg" and cfg.size is not None:
        raise SourceError("--size: the jpeg format keeps the source bytes, so it cannot resize")
    ffcv_options = cfg.ffcv_write_mode != "raw" or cfg.jpeg_quality != 90 or cfg.max_resolution is not None
    if ffcv_options and cfg.format != "ffcv":
        raise SourceError("--ffcv-write-mode, --jpeg-quality and --max-resolution apply to --format ffcv only")
    if not 1 <= cfg.jpeg_quality <= 100:
        raise SourceError(f"--jpeg-quality {cfg.jpeg_quality}: must be 1 to 100")
    if cfg.max_resolution is not None and cfg.max_resolution < 1:
        raise SourceError(f"--max-resolution {cfg.max_resolution}: must be a positive number of pixels")
    if cfg.size is not None and cfg.size < 1:
        raise SourceError(f"--size {cfg.size}: must be a positive number of pixels")
    if cfg.check < 0:
        raise SourceError(f"--check {cfg.check}: must be 0 (skip) or more")
    if cfg.workers < 1:
        raise SourceError(f"--workers {cfg.workers}: must be 1 or more")
    if cfg.out.exists() and not cfg.overwrite:
        raise SourceError(f"{cfg.out}: already exists (pass --overwrite to replace it)")
    if cfg.out.resolve() == cfg.source.resolve():
        raise SourceError(f"{cfg.out}: is the source itself")


def convert(cfg: ConvertConfig) -> dict:
    """Convert ``cfg.source`` into ``cfg.out``; on any failure or interruption nothing is
    left behind (no OUT, no temporary folder, no parent folder this call created)."""
    global _JOB
    _validate(cfg)
    start = time.perf_counter()
    source = read_source(cfg.source)
    out = cfg.out
    created = next((p for p in reversed(out.absolute().parents) if not p.exists()), None)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    previous = out.with_name(f".{out.name}.previous-{os.getpid()}")
    moved = False
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
        splits, image_size, first = {}, None, None
        _JOB = (source.splits, cfg.size, cfg.source)
        with multiprocessing.get_context("fork").Pool(cfg.workers, initializer=_worker_init) as pool:
            for split, samples in source.splits.items():
                folder = partial / split
                if cfg.format != "tensor":  # a packaging format: its module writes and checks
                    writer = load_backend(WRITERS[cfg.format], cfg.format)
                    splits[split], largest = writer.write_split(folder, samples, cfg)
                    image_size = tuple(max(a, b) for a, b in zip(largest, image_size or largest, strict=True))
                    splits[split]["checked"] = writer.round_trip_check(samples, folder, cfg)
                    continue
                image_size = decode_all(pool, samples, cfg, split, folder, first)
                first = (samples[0], (*image_size, 3))
                labels = np.array([s.label for s in samples], dtype=np.int64)
                splits[split] = write_split(folder, None, labels, [s.path for s in samples])
                splits[split]["checked"] = round_trip_check(samples, cfg, folder) if cfg.check else 0
        assert image_size is not None  # read_source finds at least one split with images
        meta: dict[str, Any] = {
            "format": cfg.format,
            "version": FORMAT_VERSION,
            "source": str(cfg.source),
            "source_kind": source.kind,
            "classes": source.classes,
            "image_size": list(image_size),
            "resize": None
            if cfg.size is None
            else {"size": cfg.size, "mode": "shorter-side bicubic, centre crop"},
            "splits": splits,
        }
        (partial / META_FILE).write_text(json.dumps(meta, indent=1))
        if out.exists() or out.is_symlink():  # --overwrite: swap, then delete the old one
            os.rename(out, previous)
            moved = True
        os.rename(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if moved and not out.exists():
            os.rename(previous, out)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        _JOB = None
    if moved:
        if previous.is_dir() and not previous.is_symlink():
            shutil.rmtree(previous, ignore_errors=True)
        else:
            previous.unlink()
    meta["seconds"] = round(time.perf_counter() - start, 1)
    return meta


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main(args: list[str] | None = None) -> None:
    cfg = parse(ConvertConfig, None, args, PROGRAM)
    handler = signal.signal(signal.SIGTERM, _terminate)
    try:
        meta = convert(cfg)
    except (SourceError, DatasetError, OSError) as error:
        fail(PROGRAM, error)
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted; {cfg.out} not written", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, handler)
    counts = ", ".join(f"{name} {split['count']}" for name, split in meta["splits"].items())
    height, width = meta["image_size"]
    checked = "round trip checked" if cfg.check else "round trip skipped"
    print(
        f"{cfg.out}: {counts} images of {height}×{width}, {len(meta['classes'])} classes, "
        f"{checked}, {meta['seconds']} s"
    )


if __name__ == "__main__":
    main()
