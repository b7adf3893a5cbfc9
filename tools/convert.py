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

import errno
import json
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

import tyro  # noqa: E402

from conversion.class_names import class_names, read_names_file  # noqa: E402
from conversion.decode import UnreadableImages  # noqa: E402
from conversion.findings import findings, leftover_warnings, stored_samples, summary_parts  # noqa: E402
from conversion.options import WHITE, WriteOptions  # noqa: E402
from conversion.sources import SourceError, duplicates_across_splits, read_source  # noqa: E402
from conversion.space import check_free_space, in_units, needed_bytes  # noqa: E402
from fastssl.cli import fail, parse  # noqa: E402
from pipelines.dataset import FORMAT_VERSION, META_FILE, DatasetError  # noqa: E402
from pipelines.formats import format_named  # noqa: E402
from pipelines.formats.tensor import size_mismatch  # noqa: E402
from pipelines.verify import fingerprint  # noqa: E402

PROGRAM = "convert.py"


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
    # transparent pixels are composited on this colour: white, black or R,G,B (0–255 each)
    alpha_background: str = "white"
    skip_bad: bool = False  # leave out the images that cannot be decoded (listed in meta.json) instead of failing
    overwrite: bool = False  # replace OUT if it exists
    # "<class folder> <name>" per line: names for plots and reports (else the source's own,
    # Imagenette's and ImageWoof's built in, or the folder names)
    class_names: Path | None = None


def _validate(cfg: ConvertConfig) -> None:
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
    _background(cfg.alpha_background)
    if cfg.out.exists() and not cfg.overwrite:
        raise SourceError(f"{cfg.out}: already exists (pass --overwrite to replace it)")
    if cfg.out.resolve() == cfg.source.resolve():
        raise SourceError(f"{cfg.out}: is the source itself")
    if cfg.size is not None and not format_named(cfg.format).resizes:
        raise SourceError(f"--size: the {cfg.format} format keeps the source bytes, so it cannot resize")


def write_options(cfg: ConvertConfig) -> WriteOptions:
    return WriteOptions(cfg.source, cfg.size, cfg.check, cfg.workers, cfg.ffcv_write_mode, cfg.jpeg_quality,
                        cfg.max_resolution, _background(cfg.alpha_background), cfg.skip_bad)


def _background(text: str) -> tuple[int, int, int]:
    """``--alpha-background``: white, black or R,G,B."""
    named = {"white": WHITE, "black": (0, 0, 0)}
    if text.strip().lower() in named:
        return named[text.strip().lower()]
    try:
        red, green, blue = (int(part) for part in text.split(","))
    except ValueError:
        raise SourceError(f"--alpha-background {text}: expected white, black or R,G,B") from None
    if not all(0 <= value <= 255 for value in (red, green, blue)):
        raise SourceError(f"--alpha-background {text}: each of R,G,B must be 0 to 255")
    return red, green, blue


def convert(cfg: ConvertConfig) -> dict:
    """Convert ``cfg.source`` into ``cfg.out``; on any failure or interruption nothing is
    left behind (no OUT, no temporary folder, no parent folder this call created)."""
    _validate(cfg)
    start = time.perf_counter()
    source = read_source(cfg.source)
    names_from_file = read_names_file(cfg.class_names, source.classes) if cfg.class_names else {}
    out, fmt, options = cfg.out, format_named(cfg.format), write_options(cfg)
    needed = needed_bytes(source, cfg.format, options)
    mount, free = check_free_space(out, needed)
    created = next((p for p in reversed(out.absolute().parents) if not p.exists()), None)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    previous = out.with_name(f".{out.name}.previous-{os.getpid()}")
    moved = False
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
        splits: dict[str, dict] = {}
        image_size: tuple[int, int] | None = None
        unreadable: list[tuple[str, str]] = []  # every split's, listed together
        for split, samples in source.splits.items():
            folder = partial / split
            try:
                splits[split], largest = fmt.write_split(folder, samples, options)
            except UnreadableImages as error:
                unreadable += error.failures
                continue
            if fmt.one_size and image_size is not None and largest != image_size:
                first = next(iter(source.splits.values()))[0]
                raise SourceError(size_mismatch(cfg.source, samples[0], largest, first, image_size))
            image_size = largest if image_size is None else (max(largest[0], image_size[0]),
                                                             max(largest[1], image_size[1]))
            kept = stored_samples(samples, splits[split])
            splits[split]["checked"] = fmt.round_trip_check(kept, folder, options) if cfg.check else 0
            splits[split].update(fingerprint(folder, splits[split]["sha256"]))  # what --data-verify quick checks
        if unreadable:
            raise UnreadableImages(cfg.source, unreadable)
        assert image_size is not None  # read_source finds at least one split with images
        duplicates = duplicates_across_splits(source)  # after decoding: a file that blocks is a worker's
        meta: dict[str, Any] = {
            "format": cfg.format,
            "version": FORMAT_VERSION,
            "source": str(cfg.source),
            "source_kind": source.kind,
            "classes": source.classes,
            "class_names": class_names(source.classes, source.names, names_from_file),
            "image_size": list(image_size),
            "resize": None
            if cfg.size is None
            else {"size": cfg.size, "mode": "shorter-side bicubic, centre crop"},
            "splits": splits,
            **findings(source, splits, duplicates),
        }
        (partial / META_FILE).write_text(json.dumps(meta, indent=1))
        if out.exists() or out.is_symlink():  # --overwrite: swap, then delete the old one
            os.rename(out, previous)
            moved = True
        os.rename(partial, out)
    except BaseException as error:
        shutil.rmtree(partial, ignore_errors=True)
        if moved and not out.exists():
            os.rename(previous, out)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise SourceError(f"{out}: the disk is full ({mount}: needed about {in_units(needed)}, "
                              f"free {in_units(free)} when the conversion began)") from error
        raise
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
    except UnreadableImages as error:
        print(f"{PROGRAM}: error: {error}", *error.listing(), sep="\n", file=sys.stderr)
        raise SystemExit(2) from None
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
    for warning in leftover_warnings(meta):
        print(f"{PROGRAM}: warning: {cfg.source}: {warning}", file=sys.stderr)
    print(
        f"{cfg.out}: {counts} images of {height}×{width}, {len(meta['classes'])} classes, "
        f"{checked}, {meta['seconds']} s" + "".join(f"; {part}" for part in summary_parts(meta, cfg.alpha_background))
    )


if __name__ == "__main__":
    main()
