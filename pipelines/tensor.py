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

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pipelines.dataset import DatasetError, DatasetInfo

SPLIT_FILES = ("images.npy", "labels.npy", "indices.npy")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_split(folder: Path, images: np.ndarray | None, labels: np.ndarray, files: list[str]) -> dict:
    """Write one split; returns its metadata entry (count and checksums).

    ``images`` None: ``folder/images.npy`` is already written (``tools/convert.py`` decodes
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
