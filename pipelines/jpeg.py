"""The ``jpeg`` format: the source JPEG files' bytes, unchanged, decoded batch by batch.

On disk, per split: ``images.bin`` (every file's bytes back to back, never re-encoded),
``offsets.npy`` (N+1 int64: image i is bytes offsets[i]:offsets[i+1]), ``sizes.npy`` (N×2
height, width, read from the headers at conversion), ``labels.npy``, ``indices.npy`` and
``files.txt``. The bytes stay in host memory; each batch is decoded by
``torchvision.io.decode_jpeg`` on the training device (nvJPEG on CUDA, libjpeg-turbo on
the CPU), padded to the batch's largest image, and handed with its sizes to the crop.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from pipelines.dataset import DatasetError, DatasetInfo
from pipelines.sources import Sample, SourceError
from pipelines.tensor import sha256

SPLIT_FILES = ("images.bin", "offsets.npy", "sizes.npy", "labels.npy", "indices.npy")
JPEG_MAGIC = b"\xff\xd8\xff"


def _jpeg_bytes(sample: Sample, origin: Path) -> tuple[bytes, tuple[int, int]]:
    data = sample.read()
    if not isinstance(data, bytes) or not data.startswith(JPEG_MAGIC):
        raise SourceError(f"{origin}: {sample.path} is not a JPEG file (--format jpeg keeps JPEG bytes as they are)")
    try:
        width, height = Image.open(io.BytesIO(data)).size  # the header only
    except Exception as error:
        raise SourceError(f"{origin}: cannot read the JPEG header of {sample.path} ({error})") from error
    return data, (height, width)


def write_split(folder: Path, samples: list[Sample], cfg: Any) -> tuple[dict, tuple[int, int]]:
    """Pack one split (``cfg``: the converter's options); returns its metadata entry and
    the largest (height, width)."""
    origin = cfg.source
    folder.mkdir(parents=True)
    offsets, sizes = [0], []
    with open(folder / "images.bin", "wb") as packed:
        for sample in samples:
            data, size = _jpeg_bytes(sample, origin)
            packed.write(data)
            offsets.append(offsets[-1] + len(data))
            sizes.append(size)
    np.save(folder / "offsets.npy", np.array(offsets, dtype=np.int64))
    np.save(folder / "sizes.npy", np.array(sizes, dtype=np.int64))
    np.save(folder / "labels.npy", np.array([s.label for s in samples], dtype=np.int64))
    np.save(folder / "indices.npy", np.arange(len(samples), dtype=np.int64))
    (folder / "files.txt").write_text("\n".join(s.path for s in samples) + "\n")
    entry = {"count": len(samples), "sha256": {name: sha256(folder / name) for name in SPLIT_FILES}}
    largest = tuple(int(v) for v in np.array(sizes).max(0))
    return entry, largest  # type: ignore[return-value]


def round_trip_check(samples: list[Sample], folder: Path, cfg: Any) -> int:
    """Stored bytes equal the source file's, exactly, and decode to the recorded size."""
    count, origin = cfg.check, cfg.source
    packed = np.fromfile(folder / "images.bin", dtype=np.uint8)
    offsets, sizes = np.load(folder / "offsets.npy"), np.load(folder / "sizes.npy")
    labels = np.load(folder / "labels.npy")
    count = min(count, len(samples))
    for i in np.random.default_rng(0).choice(len(samples), count, replace=False):
        stored = packed[offsets[i] : offsets[i + 1]]
        source = samples[i].read()
        decoded = decode_jpeg(torch.from_numpy(stored.copy()), mode=ImageReadMode.RGB)
        if stored.tobytes() != source or tuple(decoded.shape[1:]) != tuple(sizes[i]) or labels[i] != samples[i].label:
            raise SourceError(f"{origin}: round-trip check failed on {samples[i].path}")
    return count


class JpegSplit:
    """The ``Split`` of the ``jpeg`` format: bytes on the host, decoded on the device."""

    def __init__(self, info: DatasetInfo, split: str, device: torch.device) -> None:
        if split not in info.splits:
            raise DatasetError(f"{info.root}: no split '{split}' (has {', '.join(info.splits)})")
        folder = info.root / split
        try:
            self.bytes = torch.from_numpy(np.fromfile(folder / "images.bin", dtype=np.uint8))
            self.offsets = np.load(folder / "offsets.npy")
            self.sizes = torch.from_numpy(np.load(folder / "sizes.npy"))
            labels, indices = np.load(folder / "labels.npy"), np.load(folder / "indices.npy")
        except (OSError, ValueError) as error:
            raise DatasetError(f"{folder}: unreadable split ({error})") from error
        if not len(self.offsets) - 1 == len(self.sizes) == len(labels) == info.splits[split]["count"]:
            raise DatasetError(f"{folder}: split files disagree on the number of images")
        self.labels = torch.from_numpy(labels).to(device)
        self.indices = torch.from_numpy(indices).to(device)
        self.device = device

    def __len__(self) -> int:
        return self.labels.shape[0]

    def fetch(self, index: Tensor) -> Tensor:
        rows = index.tolist()
        encoded = [self.bytes[self.offsets[i] : self.offsets[i + 1]] for i in rows]
        decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        height, width = (int(v) for v in self.sizes[index].max(0).values)
        if all(d.shape[1:] == (height, width) for d in decoded):
            return torch.stack(decoded)
        batch = torch.zeros(len(rows), 3, height, width, dtype=torch.uint8, device=self.device)
        for row, image in zip(batch, decoded, strict=True):
            row[:, : image.shape[1], : image.shape[2]] = image
        return batch
