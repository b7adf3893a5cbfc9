"""The ``jpeg`` format: the source JPEG files' bytes, unchanged, decoded batch by batch.

On disk, per split: ``images.bin`` (every file's bytes back to back, never re-encoded),
``offsets.npy`` (N+1 int64: image i is bytes offsets[i]:offsets[i+1]), ``sizes.npy`` (N×2
height, width, read from the headers at conversion), ``labels.npy``, ``indices.npy`` and
``files.txt``. The bytes stay in host memory; each batch is decoded by
``torchvision.io.decode_jpeg`` on the training device (nvJPEG on CUDA, libjpeg-turbo on
the CPU), padded to the batch's largest image, and handed with its sizes to the crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from conversion.decode import check_encoded
from conversion.options import WriteOptions
from conversion.sources import Sample, SourceError
from conversion.split_files import write_host_side
from pipelines.dataset import DatasetError, DatasetInfo
from pipelines.formats import Format

SPLIT_FILES = ("images.bin", "offsets.npy", "sizes.npy", "labels.npy", "indices.npy")
JPEG_MAGIC = b"\xff\xd8\xff"


def _not_jpeg(data: bytes | np.ndarray, kinds: set[str]) -> str | None:
    if isinstance(data, bytes) and data.startswith(JPEG_MAGIC):
        return None
    return "is not a JPEG file (--format jpeg keeps JPEG bytes as they are)"


def write_split(folder: Path, samples: list[Sample], options: WriteOptions) -> tuple[dict, tuple[int, int]]:
    """Pack one split (``options``: the converter's); returns its metadata entry and
    the largest (height, width).

    Every file is decoded in full once first (``check_encoded``), not only its header read:
    a JPEG cut short would otherwise be stored, and decoded in training with grey where
    its data is missing. Files that are not JPEGs or do not decode are listed together."""
    kept, sizes, log = check_encoded(samples, options, _not_jpeg)
    folder.mkdir(parents=True)
    offsets = [0]
    with open(folder / "images.bin", "wb") as packed:
        for sample in kept:
            data = sample.read()
            packed.write(data)  # type: ignore[arg-type]  # bytes: _not_jpeg said so
            offsets.append(offsets[-1] + len(data))
    np.save(folder / "offsets.npy", np.array(offsets, dtype=np.int64))
    return write_host_side(folder, kept, sizes, SPLIT_FILES, log, samples)


def round_trip_check(samples: list[Sample], folder: Path, options: WriteOptions) -> int:
    """Stored bytes equal the source file's, exactly, and decode to the recorded size."""
    count, origin = options.check, options.origin
    packed = np.fromfile(folder / "images.bin", dtype=np.uint8)
    offsets, sizes = np.load(folder / "offsets.npy"), np.load(folder / "sizes.npy")
    labels = np.load(folder / "labels.npy")
    count = min(count, len(samples))
    for i in np.random.default_rng(0).choice(len(samples), count, replace=False):
        stored = packed[offsets[i] : offsets[i + 1]]
        source = samples[i].read()
        decoded = decode_jpeg(torch.from_numpy(stored.copy()), mode=ImageReadMode.RGB, apply_exif_orientation=False)
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
        # EXIF orientation is ignored, as everywhere in fastssl (conversion/decode.py).
        decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=False)
        height, width = (int(v) for v in self.sizes[index].max(0).values)
        if all(d.shape[1:] == (height, width) for d in decoded):
            return torch.stack(decoded)
        batch = torch.zeros(len(rows), 3, height, width, dtype=torch.uint8, device=self.device)
        for row, image in zip(batch, decoded, strict=True):
            row[:, : image.shape[1], : image.shape[2]] = image
        return batch


FORMAT = Format("jpeg", JpegSplit, write_split, round_trip_check, resizes=False, one_size=False)
