"""The ``tensor`` format: decoded uint8 pixels, resident on the training device.

On disk, per split: ``images.npy`` (N×H×W×3 uint8, memory-mappable), ``labels.npy``
(int64), ``indices.npy`` (int64 dataset indices) and ``files.txt`` (source paths). The
split is copied to the device once when it fits (else kept in pinned host memory); every
step gathers a batch by index and makes its views on the device. H×W×3 storage read as
N×3×H×W is exactly channels-last, so no layout copy happens anywhere. Large images are
converted to a fixed size (``tools/convert.py --size``: shorter side resized, centre
square kept — cropping rather than padding, so no view ever samples padding and the
object, usually central, keeps its scale).
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from conversion.decode import DecodeLog, decode, decode_in_parallel
from conversion.options import WriteOptions
from conversion.sources import Sample, SourceError
from pipelines.checksums import sha256
from pipelines.dataset import DatasetError, DatasetInfo
from pipelines.formats import Format

SPLIT_FILES = ("images.npy", "labels.npy", "indices.npy")


def write_split(folder: Path, samples: list[Sample], options: WriteOptions) -> tuple[dict, tuple[int, int]]:
    """Decode one split straight into ``folder/images.npy`` (memory-mapped, so a data set
    larger than memory converts); returns its metadata entry and its image size.

    The file is allocated whole before any pixel is written, so a full disk is an
    ``OSError`` (ENOSPC) here, never a SIGBUS from the memory map later. Images that cannot
    be decoded leave their rows unwritten; with ``--skip-bad`` the rows are then closed up."""
    if not samples:
        raise SourceError(f"{options.origin}: split '{folder.name}' has no images")
    folder.mkdir(parents=True)
    log, images, first = DecodeLog(), None, 0
    # A bar on terminals only: in a log or a pipe it would be noise around the result line.
    with tqdm(total=len(samples), desc=f"decode {folder.name}", unit="img", leave=False, disable=None) as bar:
        for index, image in decode_in_parallel(samples, options, log):
            if images is None:
                images, first = _allocate(folder / "images.npy", (len(samples), *image.shape)), index
            elif image.shape != images.shape[1:]:
                raise SourceError(size_mismatch(options.origin, samples[index], image.shape, samples[first],
                                                images.shape[1:]))
            images[index] = image
            bar.update(index + 1 - bar.n)
    kept = log.kept(samples, options)
    assert images is not None  # some sample decoded, or ``kept`` raised
    size = images.shape[1:3]
    if log.failures:
        images = _close_up(folder / "images.npy", images, sorted(log.failures))
    images.flush()
    del images
    labels = np.array([s.label for s in kept], dtype=np.int64)
    entry = write_arrays(folder, None, labels, [s.path for s in kept])
    return {**entry, **log.entry(samples)}, size


# The .npy header written here has one fixed length, so that it can be rewritten in place
# with a smaller count (version 1.0, a multiple of 64 bytes as numpy aligns its data).
NPY_HEADER = 128


def _npy_header(shape: tuple[int, ...]) -> bytes:
    text = repr({"descr": "|u1", "fortran_order": False, "shape": shape})
    body = text.ljust(NPY_HEADER - 10 - 1) + "\n"  # magic 6, version 2, length 2
    assert len(body) == NPY_HEADER - 10, shape
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _allocate(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A uint8 ``.npy`` of ``shape``, its blocks allocated on disk, memory-mapped for writing."""
    with open(path, "wb") as file:
        file.write(_npy_header(shape))
        os.posix_fallocate(file.fileno(), 0, NPY_HEADER + math.prod(shape))
    return np.memmap(path, dtype=np.uint8, mode="r+", offset=NPY_HEADER, shape=shape)


def _close_up(path: Path, images: np.memmap, holes: list[int]) -> np.memmap:
    """Move the written rows over the ``holes`` (rows never written), in order, then shrink
    the file to the rows kept; returns the file mapped again."""
    kept = np.setdiff1d(np.arange(len(images)), holes)
    for row, source in enumerate(kept):
        if row != source:
            images[row] = images[source]
    shape = (len(kept), *images.shape[1:])
    images.flush()
    del images
    with open(path, "r+b") as file:
        file.write(_npy_header(shape))
        file.truncate(NPY_HEADER + math.prod(shape))
    return np.memmap(path, dtype=np.uint8, mode="r+", offset=NPY_HEADER, shape=shape)


def size_mismatch(origin: Path, sample: Sample, shape: tuple, first: Sample, first_shape: tuple) -> str:
    return (
        f"{origin}: {sample.path} is {shape[0]}×{shape[1]} but {first.path} is "
        f"{first_shape[0]}×{first_shape[1]}; pass --size to resize every image"
    )


def round_trip_check(samples: list[Sample], folder: Path, options: WriteOptions) -> int:
    """Re-decode a random sample of source images and compare with the stored pixels and
    labels; returns how many were checked."""
    stored = np.load(folder / "images.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    if len(stored) != len(samples) or len(labels) != len(samples):
        raise SourceError(f"round-trip check failed: {folder} holds {len(stored)} images, expected {len(samples)}")
    count = min(options.check, len(samples))
    for i in np.random.default_rng(0).choice(len(samples), count, replace=False):
        again = decode(samples[i], options.size, options.origin, background=options.alpha_background)
        if not np.array_equal(again, stored[i]) or labels[i] != samples[i].label:
            raise SourceError(f"{options.origin}: round-trip check failed on {samples[i].path}")
    return count


def write_arrays(folder: Path, images: np.ndarray | None, labels: np.ndarray, files: list[str]) -> dict:
    """Write one split from arrays; returns its metadata entry (count and checksums).

    ``images`` None: ``folder/images.npy`` is already written (``write_split`` decodes
    straight into a memory-mapped file, so no second copy of the pixels is held)."""
    folder.mkdir(parents=True, exist_ok=True)
    if images is not None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"{folder}: images must be N×H×W×3 uint8, not {images.dtype} {images.shape}")
        np.save(folder / "images.npy", images)
    count = len(np.load(folder / "images.npy", mmap_mode="r"))
    if count != len(labels) or count != len(files):
        raise ValueError(f"{folder}: {count} images, {len(labels)} labels, {len(files)} file names")
    np.save(folder / "labels.npy", np.asarray(labels, dtype=np.int64))
    np.save(folder / "indices.npy", np.arange(len(labels), dtype=np.int64))
    (folder / "files.txt").write_text("".join(f"{name}\n" for name in files))
    return {"count": len(labels), "sha256": {name: sha256(folder / name) for name in SPLIT_FILES}}


def read_split(info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images N×H×W×3 uint8 memory-mapped, labels, indices) of one split."""
    if split not in info.splits:
        raise DatasetError(f"{info.root}: no split '{split}' (has {', '.join(info.splits)})")
    folder = info.root / split
    try:
        images = np.load(folder / "images.npy", mmap_mode="r")
        labels = np.load(folder / "labels.npy")
        indices = np.load(folder / "indices.npy")
    except (OSError, ValueError) as error:
        raise DatasetError(f"{folder}: unreadable split ({error})") from error
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (*info.image_size, 3):
        raise DatasetError(
            f"{folder}/images.npy: {images.dtype} {images.shape}, expected N×{info.image_size[0]}×"
            f"{info.image_size[1]}×3 uint8 (meta.json image_size)"
        )
    if labels.ndim != 1 or indices.ndim != 1:
        raise DatasetError(f"{folder}: labels.npy and indices.npy must be one-dimensional")
    if not len(images) == len(labels) == len(indices) == info.splits[split]["count"]:
        raise DatasetError(f"{folder}: split files disagree on the number of images")
    return images, labels, indices


def fits_on_device(nbytes: int, device: torch.device, share: float = 0.6) -> bool:
    """Whether a split of ``nbytes`` should live on ``device``: always on the CPU; on CUDA
    while it takes at most ``share`` of the free memory, leaving the rest to training."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


class TensorSplit:
    """One split's pixels, labels and indices (the ``Split`` of the ``tensor`` format).

    Resident on the training device whenever the pixels fit (a batch is then a gather on
    the device); otherwise in pinned host memory, each batch gathered on the host and
    copied asynchronously. ``resident=None`` decides by ``fits_on_device``.
    """

    def __init__(self, info: DatasetInfo, split: str, device: torch.device, resident: bool | None = None) -> None:
        images, labels, indices = read_split(info, split)
        self.resident = fits_on_device(images.nbytes, device) if resident is None else resident
        pixels = torch.from_numpy(np.array(images))  # read once into memory
        if self.resident:
            pixels = pixels.to(device)
        elif device.type == "cuda":
            pixels = pixels.pin_memory()
        self.images = pixels.permute(0, 3, 1, 2)  # N×3×H×W view, channels-last memory
        self.labels = torch.from_numpy(labels).to(device)
        self.indices = torch.from_numpy(indices).to(device)
        self.sizes = torch.tensor([info.image_size]).expand(len(labels), 2)
        self.device = device

    def __len__(self) -> int:
        return self.labels.shape[0]

    def fetch(self, index: Tensor) -> Tensor:
        if self.resident:
            return self.images[index.to(self.device, non_blocking=True)]
        batch = self.images[index]
        if self.device.type == "cuda":
            batch = batch.pin_memory()  # the caching host allocator keeps it until the copy is done
        return batch.to(self.device, non_blocking=True)


FORMAT = Format("tensor", TensorSplit, write_split, round_trip_check, resizes=True, one_size=True)
