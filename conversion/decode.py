"""The decoding policy: how any source image becomes the H×W×3 uint8 RGB pixels that are
stored (``tensor``, ``ffcv`` raw) or compared with what is stored (every round-trip check).

One function, used by every writer and check, so no two formats can disagree on a pixel:

- 8-bit RGB, YCbCr, grayscale (L) and bilevel (1) images: PIL's conversion to RGB (a gray
  value is repeated in the three channels).
- 16-bit images (PIL's I;16 modes, I holding values 0…65535, every 16-bit PNG — read with
  ``torchvision.io.decode_png``, because PIL keeps only the high byte of 16-bit RGB) become
  8-bit as round(v·255/65535), in integers (v·255 + 32767) // 65535; alpha included.
- Transparency (RGBA, LA, PA, a palette or PNG with a transparent colour) is composited on
  ``background`` (``--alpha-background``, white by default): out = round((a·c + (255 − a)·bg)
  / 255) with a the 8-bit alpha, in integers (a·c + (255 − a)·bg + 127) // 255 (exact:
  the quotient is never a half). Palette images without transparency: their colours.
- CMYK: PIL's conversion, R = (255 − K) − round(C·(255 − K) / 255), likewise G from M and
  B from Y (Adobe's inverted CMYK JPEGs are un-inverted by PIL's reader first).
- Every other mode (F, I outside 0…65535, LAB, HSV, …) is refused by name.
- EXIF orientation is IGNORED everywhere, as torchvision's ImageFolder does: PIL never
  applies it, ``JpegSplit.fetch`` passes ``apply_exif_orientation=False`` to
  ``decode_jpeg``, DALI's decoder ``adjust_orientation=False``. Images carrying a rotation
  are counted (``exif_rotation``) so the summary says how many are stored unrotated.

Each decode also names the kinds of conversion it made (``KINDS``); the writers count them
per split (``DecodeLog``), and an image that cannot be decoded is recorded with its reason
rather than stopping the workers, so a split's every unreadable file can be listed.
"""

from __future__ import annotations

import io
import multiprocessing
import re
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_png

from conversion.options import WHITE, WriteOptions
from conversion.sources import Sample, SourceError

CHUNK = 256  # images per worker task: small enough to balance, large enough to amortise IPC
LISTED = 20  # unreadable images named one per line before "… and N more"

# What a decode may have done besides reading 8-bit RGB, counted per split in meta.json.
KINDS = ("16-bit", "alpha_composited", "palette", "cmyk", "grayscale", "exif_rotation")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXIF_ORIENTATION = 0x0112
REFUSED_MODES = {"F": "32-bit float", "I": "32-bit integer", "LAB": "CIE L*a*b*", "HSV": "hue, saturation, value"}
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
T = TypeVar("T")


def decode(
    sample: Sample, size: int | None, origin: Path, max_side: int | None = None, background: tuple = WHITE
) -> np.ndarray:
    """The sample's pixels as H×W×3 uint8 (the policy above); with ``size``, the shorter
    side resized to ``size`` (bicubic, antialiased) and the centre ``size``×``size`` kept;
    with ``max_side``, an image whose longer side exceeds it is shrunk to it, aspect kept
    (FFCV's ``max_resolution``)."""
    return decode_counted(sample, size, origin, max_side, background)[0]


def decode_counted(
    sample: Sample, size: int | None, origin: Path, max_side: int | None = None, background: tuple = WHITE
) -> tuple[np.ndarray, set[str]]:
    """``decode``, with the kinds of conversion it made (a subset of ``KINDS``)."""
    try:
        image, kinds = _rgb(sample.read(), background)
        image = _fit(image, size, max_side)
        return np.asarray(image, dtype=np.uint8), kinds
    except Exception as error:
        raise SourceError(f"{origin}: cannot decode {sample.path} ({reason(error)})") from error


def reason(error: BaseException) -> str:
    """An error's message without PIL's ``<_io.BytesIO object at 0x…>`` noise."""
    return re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(error)) or type(error).__name__


def _rgb(data: bytes | np.ndarray, background: tuple) -> tuple[Image.Image, set[str]]:
    """The decoded image in mode RGB, full size, and the kinds of conversion made."""
    if isinstance(data, np.ndarray):
        return Image.fromarray(data), set()
    kinds = set()
    image: Image.Image = Image.open(io.BytesIO(data))
    if image.getexif().get(EXIF_ORIENTATION, 1) not in (0, 1):  # 1: upright; 0: unset
        kinds.add("exif_rotation")
    if data.startswith(PNG_MAGIC) and data[24:25] == b"\x10":  # IHDR bit depth 16
        image = _sixteen_bit_png(data)
        kinds.add("16-bit")
    image.load()  # decodes fully now: a truncated file fails here, not later
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        image = _sixteen_bit_gray(image)
        kinds.add("16-bit")
    if image.mode in REFUSED_MODES or image.mode not in {"1", "L", "P", "RGB", "YCbCr", "CMYK", *ALPHA_MODES}:
        described = f" ({REFUSED_MODES[image.mode]})" if image.mode in REFUSED_MODES else ""
        raise SourceError(f"mode {image.mode}{described} is not supported")
    kinds |= {"1": {"grayscale"}, "L": {"grayscale"}, "LA": {"grayscale"}, "La": {"grayscale"},
              "P": {"palette"}, "PA": {"palette"}, "CMYK": {"cmyk"}}.get(image.mode, set())  # fmt: skip
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        kinds.add("alpha_composited")
        return _composite(image.convert("RGBA"), background), kinds
    return image.convert("RGB"), kinds


def to_8_bit(values: np.ndarray) -> np.ndarray:
    """16-bit values 0…65535 → round(v·255/65535) as uint8."""
    return ((values.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)


def _sixteen_bit_gray(image: Image.Image) -> Image.Image:
    values = np.asarray(image)
    if image.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
        raise SourceError("mode I (32-bit integer) with values outside 0…65535 is not supported")
    return Image.fromarray(to_8_bit(values), mode="L")


def _sixteen_bit_png(data: bytes) -> Image.Image:
    """A 16-bit PNG (gray, gray + alpha, RGB, RGBA) as the 8-bit image of the same bands."""
    planes = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
    pixels = to_8_bit(planes.permute(1, 2, 0).numpy())
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    return Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode=mode)


def _composite(rgba: Image.Image, background: tuple) -> Image.Image:
    pixels = np.asarray(rgba).astype(np.int64)
    alpha, colour = pixels[:, :, 3:], pixels[:, :, :3]
    out = (alpha * colour + (255 - alpha) * np.asarray(background, dtype=np.int64) + 127) // 255
    return Image.fromarray(out.astype(np.uint8), mode="RGB")


def _fit(image: Image.Image, size: int | None, max_side: int | None) -> Image.Image:
    if size is not None and image.size != (size, size):
        width, height = image.size
        scale = size / min(width, height)
        resized = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = image.resize(resized, Image.Resampling.BICUBIC)
        left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        width, height = image.size
        scaled = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(scaled, Image.Resampling.BICUBIC)
    return image


# --- what a split's decoding found ----------------------------------------------------


class UnreadableImages(SourceError):
    """Images of a split that cannot be decoded: the message is the summary line,
    ``listing()`` one line per image."""

    def __init__(self, origin: Path, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        path, why = failures[0]
        if len(failures) == 1:
            super().__init__(f"{origin}: {path}: {why}; --skip-bad converts the rest")
        else:
            super().__init__(
                f"{origin}: {len(failures)} unreadable images (first: {path}: {why}); all listed below; "
                "--skip-bad converts the rest"
            )

    def listing(self) -> list[str]:
        if len(self.failures) == 1:
            return []
        lines = [f"  {path}: {why}" for path, why in self.failures[:LISTED]]
        if len(self.failures) > LISTED:
            lines.append(f"  … and {len(self.failures) - LISTED} more")
        return lines


@dataclass
class DecodeLog:
    """One split's decoding: the images that failed (index → reason) and the kinds of
    conversion made, counted."""

    failures: dict[int, str] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)

    def kept(self, samples: list[Sample], options: WriteOptions) -> list[Sample]:
        """The samples that decoded. Failures are an ``UnreadableImages`` error unless
        ``options.skip_bad``; a split with no readable image is an error either way."""
        failed = [(samples[i].path, why) for i, why in sorted(self.failures.items())]
        if failed and not options.skip_bad:
            raise UnreadableImages(options.origin, failed)
        kept = [sample for i, sample in enumerate(samples) if i not in self.failures]
        if not kept:
            raise SourceError(f"{options.origin}: none of the {len(samples)} images of a split can be decoded")
        return kept

    def entry(self, samples: list[Sample]) -> dict:
        """The split's meta.json additions: what was skipped and the conversions counted."""
        skipped = [{"path": samples[i].path, "reason": why} for i, why in sorted(self.failures.items())]
        return {"skipped": skipped, "decoded": {kind: self.kinds[kind] for kind in KINDS if self.kinds[kind]}}


# --- decoding in forked workers ---------------------------------------------------------

# The workers inherit the job by forking instead of pickling the samples.
_JOB: tuple[list[Sample], WriteOptions, int | None, Callable[[np.ndarray, set[str]], object]] | None = None


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: only the parent handles it (and cleans up);
    # the pool stops its workers with SIGTERM, which must keep its default action.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class _Part:
    """One task's results: what ``keep`` made of each image that decoded, by index; the
    reason of each that failed; the kinds of conversion made."""

    kept: list[tuple[int, object]]
    failures: dict[int, str]
    kinds: Counter[str]


def _decode_span(span: tuple[int, int]) -> _Part:
    samples, options, max_side, keep = _JOB  # type: ignore[misc]
    part = _Part([], {}, Counter())
    for i in range(*span):
        try:
            image, kinds = decode_counted(samples[i], options.size, options.origin, max_side, options.alpha_background)
        except SourceError as error:
            part.failures[i] = reason(error.__cause__ or error)
            continue
        part.kinds.update(kinds)
        part.kept.append((i, keep(image, kinds)))
    return part


def _in_parallel(
    samples: list[Sample],
    options: WriteOptions,
    log: DecodeLog,
    max_side: int | None,
    keep: Callable[[np.ndarray, set[str]], T],
) -> Iterator[tuple[int, T]]:
    """(index, ``keep(image, kinds)``) of every sample that decodes, in order, decoded by
    ``options.workers`` forked processes; failures and kinds go to ``log``."""
    global _JOB
    spans = [(i, min(i + CHUNK, len(samples))) for i in range(0, len(samples), CHUNK)]
    _JOB = (samples, options, max_side, keep)
    try:
        with multiprocessing.get_context("fork").Pool(options.workers, initializer=_worker_init) as pool:
            for part in pool.imap(_decode_span, spans):
                log.failures.update(part.failures)
                log.kinds.update(part.kinds)
                yield from part.kept  # type: ignore[misc]
            # Done: let the workers exit on their own; leaving the ``with`` terminates them,
            # which is for errors and interruptions (a worker killed mid-task can hang it).
            pool.close()
            pool.join()
    finally:
        _JOB = None


def decode_in_parallel(
    samples: list[Sample], options: WriteOptions, log: DecodeLog, max_side: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(index, pixels) of every sample that decodes, in order; the rest are in ``log``."""
    return _in_parallel(samples, options, log, max_side, _pixels)


def _pixels(image: np.ndarray, kinds: set[str]) -> np.ndarray:
    return image


def _size_and_kinds(image: np.ndarray, kinds: set[str]) -> tuple[tuple[int, int], set[str]]:
    return (image.shape[0], image.shape[1]), kinds  # no pixels travel back from the workers


def check_encoded(
    samples: list[Sample], options: WriteOptions, refusal: Callable[[bytes | np.ndarray, set[str]], str | None]
) -> tuple[list[Sample], list[tuple[int, int]], DecodeLog]:
    """For the formats that keep the source bytes: the samples kept (each decodes in full —
    a file whose header is intact but whose data is cut is caught — and ``refusal`` of its
    bytes and its kinds of conversion is None), their decoded (height, width), and the
    split's log. Unkept samples are an ``UnreadableImages`` error unless ``options.skip_bad``."""
    log = DecodeLog()
    decoded = dict(_in_parallel(samples, options, log, None, _size_and_kinds))
    for i, (_, kinds) in decoded.items():
        why = refusal(samples[i].read(), kinds)
        if why is not None:
            log.failures[i] = why
    kept = log.kept(samples, options)
    return kept, [size for i, (size, _) in sorted(decoded.items()) if i not in log.failures], log
