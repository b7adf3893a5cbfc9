"""The ``dali`` format: the source image files, unchanged, decoded by an NVIDIA DALI pipeline.

On disk, per split: ``files/<index>.<ext>`` (each source file's bytes exactly as they were —
JPEG or PNG, never re-encoded, taken out of an archive where the source is one),
``file_list.txt`` (DALI's ``fn.readers.file`` file-list format, ``files/<index>.<ext>
<label>`` per line, so the folder is also a plain DALI data set), ``sizes.npy`` (N×2
height, width, read from the headers at conversion), ``labels.npy``, ``indices.npy`` and
``files.txt`` (the source paths).

Reading: the ORDER is fastssl's, never DALI's. DALI's own reader shuffles through a small
random buffer, which is both weaker than a full permutation and different from what every
other backend yields; so no DALI reader is used. ``fn.external_source`` is fed the encoded
bytes of the given indices, in the given order, and ``fn.decoders.image`` decodes them
(``device="mixed"``, i.e. nvJPEG, on CUDA; libjpeg-turbo / libpng on the CPU, where the
pipeline runs with ``device_id=None``), with ``adjust_orientation=False`` so that every
backend sees the stored pixels as PIL does (EXIF rotation is not applied anywhere in
fastssl). ``fn.pad`` pads each batch to its largest image, and
the HWC batch becomes a uint8 B×3×H×W tensor (channels-last memory, like the ``tensor``
backend) on the training device. ``fetch`` runs one batch at a time; ``stream`` builds one
pipeline per epoch whose source iterates over the batches, so DALI reads and decodes the
next batches while the current one trains.

The two views are then made by OUR batched ops (``pipelines/views.py``, called by
``pipelines.loader.Loader``) exactly as for every other backend: the same parameters from
the same generator, so the ``dali`` backend yields the same views as the ``tensor`` one.
The alternative — DALI's own GPU augmentation operators (``fn.random_resized_crop``,
``fn.color_twist``, …) inside the pipeline, as solo-learn does — was NOT measured (no GPU
on the development machine) and would give views that differ from the other backends'.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nvidia.dali import fn, types
from nvidia.dali.pipeline import Pipeline
from torch import Tensor

from conversion.decode import check_encoded
from conversion.options import WriteOptions
from conversion.sources import Sample, SourceError
from conversion.split_files import write_host_side
from pipelines.dataset import DatasetError, DatasetInfo, usable_cpus
from pipelines.formats import Format

FILES = "files"
FILE_LIST = "file_list.txt"
SPLIT_FILES = (FILE_LIST, "sizes.npy", "labels.npy", "indices.npy", "files.txt")
# Encodings kept as they are: the file's leading bytes → the extension it is stored under.
MAGIC = {b"\xff\xd8\xff": "jpg", b"\x89PNG\r\n\x1a\n": "png"}


# --- writing ---------------------------------------------------------------------------


def _extension(data: bytes | np.ndarray) -> str | None:
    """The extension the file's bytes are stored under, None if not a kept encoding."""
    return next((ext for magic, ext in MAGIC.items() if isinstance(data, bytes) and data.startswith(magic)), None)


def _not_kept(data: bytes | np.ndarray, kinds: set[str]) -> str | None:
    if _extension(data) is None:
        return "is not a JPEG or PNG file (--format dali keeps the encoded files as they are)"
    if kinds & {"alpha_composited", "16-bit"}:  # not known to match the policy in DALI
        return (
            "is transparent or 16-bit, which DALI's decoder does not composite or round as "
            "conversion/decode.py does (use --format tensor or ffcv)"
        )
    return None


def write_split(folder: Path, samples: list[Sample], options: WriteOptions) -> tuple[dict, tuple[int, int]]:
    """Write one split (``options``: the converter's); returns its metadata entry and
    the largest (height, width). Every file is decoded in full once first
    (``check_encoded``); those that do not decode or are neither JPEG nor PNG are listed
    together (``--skip-bad`` leaves them out)."""
    origin = options.origin
    if options.size is not None:
        raise SourceError("--size: the dali format keeps the source files' bytes, so it cannot resize")
    if not samples:
        raise SourceError(f"{origin}: split '{folder.name}' has no images")
    kept, sizes, log = check_encoded(samples, options, _not_kept)
    (folder / FILES).mkdir(parents=True)
    names = []
    for index, sample in enumerate(kept):
        data = sample.read()
        name = f"{FILES}/{index}.{_extension(data)}"
        (folder / name).write_bytes(data)  # type: ignore[arg-type]  # bytes: _not_kept said so
        names.append(name)
    (folder / FILE_LIST).write_text("".join(f"{name} {s.label}\n" for name, s in zip(names, kept, strict=True)))
    return write_host_side(folder, kept, sizes, SPLIT_FILES, log, samples)


def round_trip_check(samples: list[Sample], folder: Path, options: WriteOptions) -> int:
    """Stored files equal the source files, byte for byte, and DALI decodes them to the
    recorded size; returns how many were checked."""
    count, origin = min(options.check, len(samples)), options.origin
    if count == 0:
        return 0
    names = _read_file_list(folder)
    sizes, labels = np.load(folder / "sizes.npy"), np.load(folder / "labels.npy")
    if not len(names) == len(sizes) == len(labels) == len(samples):
        raise SourceError(f"round-trip check failed: {folder} disagrees with the source on the number of images")
    chosen = np.random.default_rng(0).choice(len(samples), count, replace=False)
    decoder = _Decoder(torch.device("cpu"), pad=False)
    for start in range(0, count, 64):
        rows = chosen[start : start + 64]
        stored = [np.fromfile(folder / names[i], dtype=np.uint8) for i in rows]
        for i, data in zip(rows, stored, strict=True):
            if data.tobytes() != samples[i].read() or labels[i] != samples[i].label:
                raise SourceError(f"{origin}: round-trip check failed on {samples[i].path}")
        try:
            shapes = decoder.shapes(stored)
        except RuntimeError as error:
            raise SourceError(
                f"{origin}: DALI cannot decode one of {[samples[i].path for i in rows]} "
                f"({(str(error).strip().splitlines() or [type(error).__name__])[0]})"
            ) from error
        for i, shape in zip(rows, shapes, strict=True):
            if shape != tuple(sizes[i]):
                raise SourceError(f"{origin}: round-trip check failed on {samples[i].path} (decodes to {shape})")
    return count


# --- reading ---------------------------------------------------------------------------


def _read_file_list(folder: Path) -> list[str]:
    return [line.rsplit(" ", 1)[0] for line in (folder / FILE_LIST).read_text().splitlines() if line]


def _build(device: torch.device, batch_size: int, source: Any = None, pad: bool = True) -> Pipeline:
    """A DALI pipeline: encoded bytes (fed, or pulled from ``source``) → decoded RGB HWC
    uint8, padded to the batch's largest image unless ``pad`` is False."""
    cuda = device.type == "cuda"
    device_id = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    if source is None:  # fed batch by batch: nothing to overlap, so no prefetching
        pipe = Pipeline(
            batch_size=batch_size,
            num_threads=usable_cpus(),
            device_id=device_id,
            exec_pipelined=False,
            exec_async=False,
            prefetch_queue_depth=1,
        )
    else:
        pipe = Pipeline(batch_size=batch_size, num_threads=usable_cpus(), device_id=device_id, prefetch_queue_depth=2)
    with pipe:
        encoded = fn.external_source(source=source, name="encoded", dtype=types.DALIDataType.UINT8, ndim=1, batch=True)
        images = fn.decoders.image(
            encoded, device="mixed" if cuda else "cpu", output_type=types.DALIImageType.RGB, adjust_orientation=False
        )
        pipe.set_outputs(fn.pad(images, fill_value=0, axes=(0, 1)) if pad else images)
    pipe.build()
    return pipe


def _to_torch(output: Any, device: torch.device) -> Tensor:
    """A padded DALI batch (B×H×W×3) → uint8 B×3×H×W on ``device``, channels-last memory."""
    dense = output.as_tensor()
    if device.type == "cuda":
        from nvidia.dali.plugin.pytorch import feed_ndarray

        batch = torch.empty(dense.shape(), dtype=torch.uint8, device=device)
        feed_ndarray(dense, batch, cuda_stream=torch.cuda.current_stream(device))
    else:
        batch = torch.from_numpy(np.array(dense))  # a copy: DALI reuses its output buffers
    return batch.permute(0, 3, 1, 2)


class _Decoder:
    """A fed pipeline for one batch at a time, rebuilt when a batch is larger than any before."""

    pipe: Pipeline | None

    def __init__(self, device: torch.device, pad: bool = True) -> None:
        self.device, self.pad, self.pipe, self.capacity = device, pad, None, 0

    def run(self, encoded: list[np.ndarray]) -> Any:
        if self.pipe is None or len(encoded) > self.capacity:
            self.pipe = None  # release the old one first
            self.pipe, self.capacity = _build(self.device, len(encoded), pad=self.pad), len(encoded)
        self.pipe.feed_input("encoded", encoded)
        (output,) = self.pipe.run()
        return output

    def __call__(self, encoded: list[np.ndarray]) -> Tensor:
        return _to_torch(self.run(encoded), self.device)

    def shapes(self, encoded: list[np.ndarray]) -> list[tuple[int, int]]:
        """Each image's decoded (height, width) (an unpadded decoder)."""
        return [(int(s[0]), int(s[1])) for s in self.run(encoded).shape()]


class DaliSplit:
    """The ``Split`` of the ``dali`` format: files on disk, decoded by DALI in our order."""

    def __init__(self, info: DatasetInfo, split: str, device: torch.device) -> None:
        if split not in info.splits:
            raise DatasetError(f"{info.root}: no split '{split}' (has {', '.join(info.splits)})")
        folder = info.root / split
        try:
            self.paths = [folder / name for name in _read_file_list(folder)]
            self.sizes = torch.from_numpy(np.load(folder / "sizes.npy"))
            labels, indices = np.load(folder / "labels.npy"), np.load(folder / "indices.npy")
        except (OSError, ValueError) as error:
            raise DatasetError(f"{folder}: unreadable split ({error})") from error
        if not len(self.paths) == len(self.sizes) == len(labels) == info.splits[split]["count"]:
            raise DatasetError(f"{folder}: split files disagree on the number of images")
        self.labels = torch.from_numpy(labels).to(device)
        self.indices = torch.from_numpy(indices).to(device)
        self.device = device
        self._decoder = _Decoder(device)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def _read(self, index: Tensor) -> list[np.ndarray]:
        """The encoded bytes of the images at ``index``, in that order."""
        try:
            return [np.fromfile(self.paths[i], dtype=np.uint8) for i in index.tolist()]
        except OSError as error:
            raise DatasetError(f"unreadable image file ({error})") from error

    def fetch(self, index: Tensor) -> Tensor:
        return self._decoder(self._read(index))

    def stream(self, batches: list[Tensor]) -> Iterator[Tensor]:
        """The pixels of each batch in turn, from one pipeline whose source walks the batches
        in the given order (DALI reads and decodes ahead while the caller trains)."""
        if not batches:
            return
        pipe = _build(self.device, max(len(b) for b in batches), source=map(self._read, batches))
        try:
            for _ in batches:
                (output,) = pipe.run()
                yield _to_torch(output, self.device)
        finally:
            del pipe


FORMAT = Format("dali", DaliSplit, write_split, round_trip_check, resizes=False, one_size=False)
