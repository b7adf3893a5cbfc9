"""The options every format's writer takes (``tools/convert.py`` fills them in)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

WHITE = (255, 255, 255)


@dataclass(frozen=True)
class WriteOptions:
    origin: Path  # the source directory or archive, named in every message
    size: int | None = None  # shorter side resized to SIZE, centre SIZE×SIZE kept
    check: int = 256  # images per split read back and compared with the source; 0 skips
    workers: int = 1  # decoding processes
    ffcv_write_mode: Literal["raw", "jpg"] = "raw"  # ffcv: decoded pixels, or re-encoded as JPEG
    jpeg_quality: int = 90  # ffcv jpg: JPEG quality, 1–100
    max_resolution: int | None = None  # ffcv: longer side capped at this many pixels, aspect kept
    alpha_background: tuple[int, int, int] = WHITE  # transparent pixels are composited on this RGB colour
    skip_bad: bool = False  # images that cannot be decoded are left out (and listed) instead of failing
