"""The ``ffcv`` format: an FFCV ``.beton`` file, decoded on the CPU once per image.

On disk, per split: ``data.beton`` (FFCV fields ``image`` — an ``RGBImageField`` —,
``label`` and ``index``, both ``IntField``), plus ``sizes.npy`` (N×2 height, width),
``labels.npy``, ``indices.npy`` and ``files.txt`` so that the host knows every image's size
and label without opening the ``.beton``.

Images are stored ``write_mode="raw"`` by default: the decoded uint8 pixels, exactly those
of ``conversion.decode.decode`` (and of the ``tensor`` format), so the round-trip check and
the cross-backend tests compare exactly. ``tools/convert.py --ffcv-write-mode jpg
[--jpeg-quality Q]`` re-encodes every image as JPEG: a smaller file, but lossy, so its
round-trip check only bounds the error. ``--max-resolution R`` caps the longer side at R
pixels; we resize in our own decode pass (PIL bicubic, aspect kept) rather than in FFCV's
writer, so the stored pixels stay those every other backend would decode.

Reading: ``FfcvSplit.stream`` runs ONE ``ffcv.loader.Loader`` per call over the
concatenated indices of all the batches it is given (``OrderOption.SEQUENTIAL``, so the
order is fastssl's permutation, never FFCV's shuffler), decoding each image once with
FFCV's numba ``SimpleRGBImageDecoder`` on the CPU, then hands each batch to the device.
``SimpleRGBImageDecoder`` only takes images of one size; a split of variable sizes (a
conversion without ``--size`` of images that differ) streams batch by batch through
``fetch`` instead, which reads the ``.beton`` directly (raw pixels are a slice of the
file; JPEG ones go through FFCV's libjpeg-turbo ``imdecode``) and pads to the batch's
largest image. Both paths give the same pixels.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from ffcv.fields import IntField, RGBImageField
from ffcv.fields.decoders import SimpleRGBImageDecoder
from ffcv.fields.rgb_image import IMAGE_MODES
from ffcv.libffcv import imdecode
from ffcv.loader import Loader as FfcvLoader
from ffcv.loader import OrderOption
from ffcv.reader import Reader
from ffcv.writer import MIN_PAGE_SIZE, DatasetWriter
from torch import Tensor

from conversion.decode import DecodeLog, decode, decode_in_parallel
from conversion.options import WriteOptions
from conversion.sources import Sample, SourceError
from pipelines.checksums import sha256
from pipelines.dataset import DatasetError, DatasetInfo, usable_cpus
from pipelines.formats import Format

BETON = "data.beton"
SPLIT_FILES = (BETON, "sizes.npy", "labels.npy", "indices.npy")
PIXELS_TMP = ".pixels.tmp"  # decoded pixels between the two conversion passes
JPG_TOLERANCE = 8.0  # mean absolute error (0…255) allowed for write_mode="jpg"


# --- writing ---------------------------------------------------------------------------


class _DecodedPixels:
    """The indexed data set FFCV's writer reads: (H×W×3 uint8, label, index) per image,
    from the pixels decoded in the first pass (so FFCV's writer processes, which cannot
    report an error, never decode anything). Picklable: it opens its file lazily."""

    def __init__(self, path: Path, offsets: np.ndarray, sizes: np.ndarray, labels: np.ndarray) -> None:
        self.path, self.offsets, self.sizes, self.labels = path, offsets, sizes, labels
        self._pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:
        if self._pixels is None:
            self._pixels = np.memmap(self.path, dtype=np.uint8, mode="r")
        height, width = self.sizes[i]
        image = np.asarray(self._pixels[self.offsets[i] : self.offsets[i + 1]]).reshape(height, width, 3)
        return image, int(self.labels[i]), int(i)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None}


def write_split(folder: Path, samples: list[Sample], options: WriteOptions) -> tuple[dict, tuple[int, int]]:
    """Write one split as ``folder/data.beton`` plus its host-side arrays; returns its
    metadata entry and the largest (height, width).

    Two passes: the images are decoded first (``options.workers`` processes; the unreadable
    ones are listed together, or left out with ``--skip-bad``), then FFCV's writer packs the
    decoded pixels."""
    origin = options.origin
    if not samples:
        raise SourceError(f"{origin}: a split has no images")
    mode, quality = options.ffcv_write_mode, options.jpeg_quality
    folder.mkdir(parents=True)
    temporary = folder / PIXELS_TMP
    offsets, sizes, log = [0], [], DecodeLog()
    try:
        with open(temporary, "wb") as out:
            for index, image in decode_in_parallel(samples, options, log, options.max_resolution):
                if image.shape[0] > 65535 or image.shape[1] > 65535:  # FFCV stores u16 sizes
                    raise SourceError(f"{origin}: {samples[index].path} is {image.shape[0]}×{image.shape[1]}, "
                                      "too large for FFCV")
                out.write(np.ascontiguousarray(image).tobytes())
                offsets.append(offsets[-1] + image.nbytes)
                sizes.append(image.shape[:2])
        kept = log.kept(samples, options)
        labels = np.array([s.label for s in kept], dtype=np.int64)
        size_array = np.array(sizes, dtype=np.int64).reshape(-1, 2)
        pixels = _DecodedPixels(temporary, np.array(offsets, dtype=np.int64), size_array, labels)
        fields = {
            "image": RGBImageField(write_mode=mode, max_resolution=None, jpeg_quality=quality),
            "label": IntField(),
            "index": IntField(),
        }
        # A page must hold the largest image: FFCV's default 8 MiB fails above ~1670² raw.
        largest_bytes = int((size_array[:, 0] * size_array[:, 1]).max()) * 3
        page_size = max(MIN_PAGE_SIZE, 1 << (largest_bytes + 4096).bit_length())
        writer = DatasetWriter(str(folder / BETON), fields, page_size=page_size, num_workers=options.workers)
        # FFCV's writer always draws a progress bar: keep it off logs and pipes.
        quiet = contextlib.nullcontext() if sys.stderr.isatty() else contextlib.redirect_stderr(io.StringIO())
        before = set(multiprocessing.active_children())
        try:
            with quiet:
                writer.from_indexed_dataset(pixels, chunksize=256)
        except BaseException:  # interrupted: stop the writer processes FFCV started
            for process in set(multiprocessing.active_children()) - before:
                process.terminate()
                process.join()
            raise
    finally:
        temporary.unlink(missing_ok=True)
    np.save(folder / "sizes.npy", size_array)
    np.save(folder / "labels.npy", labels)
    np.save(folder / "indices.npy", np.arange(len(kept), dtype=np.int64))
    (folder / "files.txt").write_text("".join(f"{s.path}\n" for s in kept))
    entry = {
        **log.entry(samples),
        "count": len(kept),
        "sha256": {name: sha256(folder / name) for name in SPLIT_FILES},
        "ffcv": {"write_mode": mode, "jpeg_quality": quality if mode == "jpg" else None,
                 "max_resolution": options.max_resolution},
    }
    largest = tuple(int(v) for v in size_array.max(0))
    return entry, largest  # type: ignore[return-value]


def round_trip_check(samples: list[Sample], folder: Path, options: WriteOptions) -> int:
    """Read a random sample of ``options.check`` images back — FFCV's ``Reader`` for labels,
    indices, sizes and where each image lies, the bytes as ``FfcvSplit.fetch`` reads them —
    and compare them with a fresh decode of the source: exactly for raw storage, within
    ``JPG_TOLERANCE`` for JPEG. (FFCV's ``Loader`` is not used here: building one
    JIT-compiles its pipeline, seconds per split; ``stream`` checks the order it returns.)"""
    origin = options.origin
    count = min(options.check, len(samples))
    if count == 0:
        return 0
    chosen = np.sort(np.random.default_rng(0).choice(len(samples), count, replace=False))
    try:
        stored = _BetonImages(folder / BETON)
    except (OSError, ValueError, AssertionError) as error:
        raise SourceError(f"round-trip check failed: cannot read {folder / BETON} ({error})") from error
    if stored.count != len(samples):
        raise SourceError(f"round-trip check failed: {folder / BETON} holds {stored.count} images, "
                          f"expected {len(samples)}")
    labels, indices = stored.field("label"), stored.field("index")
    sizes = np.load(folder / "sizes.npy")
    images = (stored.read(int(i)) for i in chosen)
    for image, i in zip(images, chosen, strict=True):
        again = decode(samples[i], options.size, origin, options.max_resolution, options.alpha_background)
        same_size = image.shape == again.shape and tuple(sizes[i]) == again.shape[:2]
        if stored.modes[i] == IMAGE_MODES["raw"]:
            same_pixels = same_size and np.array_equal(image, again)
        else:
            deviation = np.abs(image.astype(np.int16) - again) if same_size else None
            same_pixels = deviation is not None and float(deviation.mean()) <= JPG_TOLERANCE
        if not same_pixels or labels[i] != samples[i].label or indices[i] != i:
            raise SourceError(f"{origin}: round-trip check failed on {samples[i].path}")
    return count


# --- reading ---------------------------------------------------------------------------


class _BetonImages:
    """Direct access to the images of a ``.beton``: FFCV's ``Reader`` for the metadata,
    the file memory-mapped for the bytes (as FFCV's own OS-cache memory manager does)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader = Reader(str(path))
        if "image" not in self.reader.handlers or "index" not in self.reader.handlers:
            raise ValueError("no 'image' and 'index' fields")
        self.count = int(self.reader.num_samples)
        image = self.field("image")
        self.modes = image["mode"]
        self.heights = image["height"].astype(np.int64)
        self.widths = image["width"].astype(np.int64)
        self.pointers = image["data_ptr"]
        table = self.reader.alloc_table
        order = np.argsort(table["ptr"])
        self.table_ptrs, self.table_sizes = table["ptr"][order], table["size"][order]
        self.file = np.memmap(path, dtype=np.uint8, mode="r")
        self.all_raw = bool((self.modes == IMAGE_MODES["raw"]).all())
        self._loaders: dict[int, FfcvLoader] = {}  # batch size → Loader, compiled once
        self.uniform = self.count > 0 and len({*self.heights.tolist()}) == 1 and len({*self.widths.tolist()}) == 1

    def field(self, name: str) -> np.ndarray:
        """The metadata column of a field (FFCV names its columns by position)."""
        return self.reader.metadata[self.reader.metadata.dtype.names[self.reader.field_names.index(name)]]

    def read(self, i: int) -> np.ndarray:
        """Image ``i`` as H×W×3 uint8."""
        pointer = self.pointers[i]
        size = self.table_sizes[np.searchsorted(self.table_ptrs, pointer)]
        data = self.file[pointer : pointer + size]
        height, width = int(self.heights[i]), int(self.widths[i])
        if self.modes[i] == IMAGE_MODES["raw"]:
            return np.asarray(data).reshape(height, width, 3)
        image = np.empty((height, width, 3), dtype=np.uint8)
        imdecode(np.ascontiguousarray(data), image, height, width, height, width, 0, 0, 1, 1, False, False)
        return image

    def loader_batches(self, order: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(B×H×W×3 uint8, B dataset indices) per batch of ``order``, through one FFCV
        ``Loader`` in exactly that order. The arrays live in FFCV's reused buffers: valid
        until the next batch is asked for. Needs images of one size."""
        order = np.asarray(order, dtype=np.int64)
        loader = self._loaders.get(batch_size)
        if loader is None:
            loader = FfcvLoader(
                str(self.path),
                batch_size=batch_size,
                num_workers=usable_cpus(),
                order=OrderOption.SEQUENTIAL,
                indices=order,
                pipelines={"image": [SimpleRGBImageDecoder()], "label": None},
                drop_last=False,
            )
            self._loaders[batch_size] = loader
        else:
            # Reuse the compiled pipeline (building a Loader JIT-compiles it, ~1 s): only the
            # sequence changes. The index check below guards this use of FFCV's internals.
            loader.indices = loader.traversal_order.indices = order
            loader.first_traversal_order = order
        epoch = iter(loader)  # an FFCV EpochIterator: a thread decoding ahead, own buffers
        try:
            start = 0
            for images, index in epoch:
                expected = order[start : start + len(images)]
                if not np.array_equal(np.asarray(index).reshape(-1), expected):
                    raise DatasetError(f"{self.path}: FFCV returned images out of the requested order")
                start += len(images)
                yield images, expected
            if start != len(order):
                raise DatasetError(f"{self.path}: FFCV returned {start} images, {len(order)} requested")
        finally:  # also when abandoned mid-epoch: stop the thread at its next hand-over
            epoch.close()


class FfcvSplit:
    """The ``Split`` of the ``ffcv`` format: decoded on the CPU (FFCV's numba decoder when
    every image has one size, else the direct reader), each batch then copied to the
    device."""

    def __init__(self, info: DatasetInfo, split: str, device: torch.device) -> None:
        if split not in info.splits:
            raise DatasetError(f"{info.root}: no split '{split}' (has {', '.join(info.splits)})")
        folder = info.root / split
        try:
            self.images = _BetonImages(folder / BETON)
            sizes = np.load(folder / "sizes.npy")
            labels, indices = np.load(folder / "labels.npy"), np.load(folder / "indices.npy")
        except (OSError, ValueError, AssertionError, IndexError) as error:
            raise DatasetError(f"{folder}: unreadable split ({error})") from error
        if sizes.ndim != 2 or sizes.shape[1:] != (2,):
            raise DatasetError(f"{folder}/sizes.npy: {sizes.shape}, expected N×2 (height, width)")
        if not self.images.count == len(sizes) == len(labels) == len(indices) == info.splits[split]["count"]:
            raise DatasetError(f"{folder}: split files disagree on the number of images")
        if not (np.array_equal(sizes[:, 0], self.images.heights) and np.array_equal(sizes[:, 1], self.images.widths)):
            raise DatasetError(f"{folder}: sizes.npy disagrees with {BETON}")
        self.sizes = torch.from_numpy(sizes.astype(np.int64))
        self.labels = torch.from_numpy(labels).to(device)
        self.indices = torch.from_numpy(indices).to(device)
        self.device = device

    def __len__(self) -> int:
        return self.labels.shape[0]

    def _to_device(self, batch: np.ndarray) -> Tensor:
        """B×H×W×3 host pixels (possibly in a buffer about to be reused) → B×3×H×W on the
        device, channels-last in memory."""
        pixels = torch.from_numpy(batch)
        pixels = pixels.pin_memory() if self.device.type == "cuda" else pixels.clone()  # own copy
        return pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2)

    def fetch(self, index: Tensor) -> Tensor:
        rows = index.tolist()
        if self.images.uniform and self.images.all_raw and rows:  # one gather from the file
            height, width = int(self.images.heights[0]), int(self.images.widths[0])
            starts = self.images.pointers[rows].astype(np.int64)
            pixels = self.images.file[starts[:, None] + np.arange(height * width * 3)]
            return self._to_device(pixels.reshape(len(rows), height, width, 3))
        height, width = (int(v) for v in self.sizes[index].max(0).values)
        batch = np.zeros((len(rows), height, width, 3), dtype=np.uint8)
        for out, i in zip(batch, rows, strict=True):
            image = self.images.read(i)
            out[: image.shape[0], : image.shape[1]] = image
        return self._to_device(batch)

    def stream(self, batches: list[Tensor]) -> Iterator[Tensor]:
        """The pixels of each batch in turn, all through one FFCV ``Loader`` where it can
        (images of one size, batches of one size but a shorter last one); else one
        ``fetch`` per batch."""
        if not batches:
            return iter(())
        size = len(batches[0])
        even = size > 0 and all(len(b) == size for b in batches[:-1]) and 0 < len(batches[-1]) <= size
        if not (self.images.uniform and even):
            return map(self.fetch, batches)
        order = torch.cat(batches).numpy()
        return (self._to_device(images) for images, _ in self.images.loader_batches(order, size))


FORMAT = Format("ffcv", FfcvSplit, write_split, round_trip_check, resizes=True, one_size=False)
