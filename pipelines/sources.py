"""Readers for the source layouts ``tools/convert.py`` accepts.

A source is read into ``Split`` s: a list of samples per split, each sample a label plus a
way to get its pixels (encoded image bytes, or an already decoded array for CIFAR's pickle
batches). Directories and ``.tar``/``.tar.gz`` archives are read through one file-tree
abstraction, so every layout works from either.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


class SourceError(Exception):
    """A source that cannot be read; the message names the file."""


@dataclass
class Sample:
    path: str  # relative to the source root, for messages and provenance
    label: int
    read: Callable[[], bytes | np.ndarray]  # encoded bytes, or an H×W×3 uint8 array


@dataclass
class Source:
    classes: list[str]
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    kind: str = ""


# --- file trees: a directory or an archive, as {relative path: reader} -------------------


def _directory_tree(root: Path) -> dict[str, Callable[[], bytes]]:
    tree = {}
    for folder, _, files in os.walk(root, followlinks=True):
        for name in files:
            full = Path(folder) / name
            tree[full.relative_to(root).as_posix()] = full.read_bytes
    return tree


def _archive_tree(path: Path) -> dict[str, Callable[[], bytes]]:
    """Every file of the archive, read into memory in one sequential pass (a compressed
    archive cannot be read out of order cheaply, and forked decoders share the bytes)."""
    try:
        with tarfile.open(path) as archive:
            contents = {}
            for member in archive:
                if member.isfile():
                    data = archive.extractfile(member).read()  # type: ignore[union-attr]
                    contents[member.name.removeprefix("./").lstrip("/")] = data
            # Read to the end so that gzip/bz2/xz verify their checksum: tar itself has
            # none for file contents, and a corrupt block would otherwise go unnoticed.
            while archive.fileobj.read(1 << 20):  # type: ignore[union-attr]
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as error:
        raise SourceError(f"{path}: not a readable tar archive ({error})") from error
    return {name: (lambda data=data: data) for name, data in contents.items()}


def _hidden(name: str) -> bool:
    """Dot files (``.DS_Store``, macOS ``._x.jpg`` resource forks, …) are never data."""
    return any(part.startswith(".") for part in name.split("/"))


def _strip_single_top_folder(tree: dict[str, Callable[[], bytes]]) -> dict:
    tree = {name: read for name, read in tree.items() if not _hidden(name)}
    tops = {name.split("/", 1)[0] for name in tree}
    if len(tops) == 1 and all("/" in name for name in tree):
        return {name.split("/", 1)[1]: read for name, read in tree.items()}
    return tree


# --- layouts ---------------------------------------------------------------------------


def _cifar_layout(tree: dict, origin: Path) -> Source | None:
    names = {name.rsplit("/", 1)[-1]: name for name in tree}
    if "data_batch_1" in names and "test_batch" in names:
        train = [names[f"data_batch_{i}"] for i in range(1, 6) if f"data_batch_{i}" in names]
        batches = {"train": train, "test": [names["test_batch"]]}
        meta_name, label_key, classes_key, kind = "batches.meta", b"labels", b"label_names", "cifar10"
    elif {"train", "test", "meta"} <= names.keys():
        batches = {"train": [names["train"]], "test": [names["test"]]}
        meta_name, label_key, classes_key, kind = "meta", b"fine_labels", b"fine_label_names", "cifar100"
    else:
        return None

    def unpickle(name: str) -> dict:
        try:
            batch = _CifarUnpickler(io.BytesIO(tree[name]()), encoding="bytes").load()
        except Exception as error:
            raise SourceError(f"{origin / name}: not a CIFAR pickle batch ({error})") from error
        if not isinstance(batch, dict):
            raise SourceError(f"{origin / name}: not a CIFAR pickle batch (holds a {type(batch).__name__})")
        return batch

    if meta_name not in names:
        raise SourceError(f"{origin / meta_name}: missing; CIFAR batches need their class names")
    try:
        classes = [
            c.decode() if isinstance(c, bytes) else str(c) for c in unpickle(names[meta_name])[classes_key]
        ]
    except KeyError as error:
        raise SourceError(f"{origin / names[meta_name]}: no {classes_key!r} in it") from error
    source = Source(classes, kind=kind)
    for split, files in batches.items():
        samples = []
        for name in files:
            batch = unpickle(name)
            try:
                rows = np.asarray(batch[b"data"])
                labels = [int(label) for label in batch[label_key]]
                if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3 * 32 * 32:
                    raise ValueError(f"b'data' is {rows.dtype} {rows.shape}, not uint8 rows of 3072")
                if len(labels) != len(rows):
                    raise ValueError(f"{len(rows)} images but {len(labels)} labels")
                if labels and not 0 <= min(labels) <= max(labels) < len(classes):
                    raise ValueError(f"labels outside 0…{len(classes) - 1}")
            except (KeyError, TypeError, ValueError) as error:
                raise SourceError(f"{origin / name}: not a CIFAR batch ({error})") from error
            pixels = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows → HWC
            for row, (label, array) in enumerate(zip(labels, pixels, strict=True)):
                samples.append(Sample(f"{name}#{row}", label, lambda a=array: a))
        source.splits[split] = samples
    return source


class _CifarUnpickler(pickle.Unpickler):
    """Loads plain containers and numpy arrays only: a pickle can run any code it names."""

    ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
    }

    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        if module.startswith("numpy.core."):  # written by numpy 1
            module = "numpy._core." + module.removeprefix("numpy.core.")
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _image_folder(tree: dict, prefix: str, classes: list[str], origin: Path) -> list[Sample]:
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for name in sorted(tree):
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        if len(parts) != 2 or Path(parts[1]).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if parts[0] not in index:
            raise SourceError(f"{origin / name}: class folder '{parts[0]}' is not in train/")
        samples.append(Sample(name, index[parts[0]], tree[name]))
    return samples


def _image_folder_layout(tree: dict, origin: Path) -> Source | None:
    def class_folders(prefix: str) -> list[str]:
        folders = set()
        for name in tree:
            if name.startswith(prefix):
                parts = name[len(prefix) :].split("/")
                if len(parts) == 2 and Path(parts[1]).suffix.lower() in IMAGE_SUFFIXES:
                    folders.add(parts[0])
        return sorted(folders)

    if class_folders("train/"):
        classes = class_folders("train/")
        source = Source(classes, kind="imagefolder")
        source.splits["train"] = _image_folder(tree, "train/", classes, origin)
        for held_out in ("test", "val"):
            if class_folders(f"{held_out}/"):
                source.splits[held_out] = _image_folder(tree, f"{held_out}/", classes, origin)
                break
        return source
    if class_folders(""):
        classes = class_folders("")
        return Source(classes, {"train": _image_folder(tree, "", classes, origin)}, "imagefolder")
    return None


def read_source(path: Path) -> Source:
    """Detect the layout of ``path`` (a directory or a tar archive) and list its samples."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if path.is_dir():
        tree = _directory_tree(path)
    elif tarfile.is_tarfile(path):
        tree = _archive_tree(path)
    else:
        raise SourceError(f"{path}: neither a directory nor a tar archive")
    tree = _strip_single_top_folder(tree)
    for layout in (_cifar_layout, _image_folder_layout):
        source = layout(tree, path)
        if source is not None:
            if not any(source.splits.values()):
                break
            return source
    raise SourceError(
        f"{path}: unknown layout (expected train/<class>/<image> with test/ or val/, "
        "<class>/<image>, or CIFAR-10/100 python batches)"
    )


def decode(sample: Sample, size: int | None, origin: Path) -> np.ndarray:
    """The sample's pixels as H×W×3 uint8; with ``size``, the shorter side resized to
    ``size`` (bicubic, antialiased) and the centre ``size``×``size`` kept."""
    try:
        data = sample.read()
        image = Image.fromarray(data) if isinstance(data, np.ndarray) else Image.open(io.BytesIO(data))
        image.load()  # decodes fully now: a truncated file fails here, not later
        image = image.convert("RGB")
        if size is not None and image.size != (size, size):
            width, height = image.size
            scale = size / min(width, height)
            resized = (max(size, round(width * scale)), max(size, round(height * scale)))
            image = image.resize(resized, Image.Resampling.BICUBIC)
            left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
            image = image.crop((left, top, left + size, top + size))
        return np.asarray(image, dtype=np.uint8)
    except Exception as error:
        raise SourceError(f"{origin}: cannot decode {sample.path} ({error})") from error
