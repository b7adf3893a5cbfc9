"""The source layouts ``tools/convert.py`` accepts, read into lists of samples.

A source is read into ``Split`` s: a list of samples per split, each sample a label plus a
way to get its pixels (encoded image bytes, or an already decoded array for CIFAR's pickle
batches and STL-10's binaries). Directories and ``.tar``/``.tar.gz`` archives are read
through one file-tree abstraction, so every layout works from either.

Layouts, tried in this order (specific before generic): CIFAR-10/100 python batches, STL-10
binaries, Tiny-ImageNet-200 as distributed, NABirds (or CUB-200-2011), ImageFolder.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

V = TypeVar("V")

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
    ignored: list[str] = field(default_factory=list)  # files in the split folders that are not samples
    empty_folders: list[str] = field(default_factory=list)  # class folders ("train/bird/") without images
    names: dict[str, str] = field(default_factory=dict)  # class id → the name the source gives it


# --- file trees: a directory or an archive, as {relative path: reader} -------------------
# (an empty folder is listed too, as "path/": the ImageFolder layout reports empty classes)


class _LocalFile:
    """Reads a file of a directory source; ``path`` lets large binary files be mapped
    into memory instead of read (STL-10's ``unlabeled_X.bin`` is 2.8 GB)."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> bytes:
        return self.path.read_bytes()


def _in_memory(value: V) -> Callable[[], V]:
    """A reader of ``value``, already in memory (an archive member's bytes, a CIFAR image)."""
    return lambda: value


def _directory_tree(root: Path) -> dict[str, Callable[[], bytes]]:
    tree: dict[str, Callable[[], bytes]] = {}
    for folder, folders, files in os.walk(root, followlinks=True):
        if not folders and not files and Path(folder) != root:
            tree[f"{Path(folder).relative_to(root).as_posix()}/"] = _in_memory(b"")  # an empty folder
        for name in files:
            full = Path(folder) / name
            tree[full.relative_to(root).as_posix()] = _LocalFile(full)
    return tree


def _uint8_view(read: Callable[[], bytes], name: str, origin: Path) -> np.ndarray:
    """A file's bytes as a read-only uint8 array: memory-mapped from a directory, a view
    of the (already in-memory) bytes from an archive."""
    try:
        if isinstance(read, _LocalFile):
            if read.path.stat().st_size == 0:
                return np.zeros(0, np.uint8)
            return np.memmap(read.path, dtype=np.uint8, mode="r")
        return np.frombuffer(read(), dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise SourceError(f"{origin / name}: unreadable ({error})") from error


def _text_lines(tree: dict, name: str, origin: Path, why: str) -> list[tuple[int, str]]:
    """(line number, stripped line) of a text file's non-blank lines; missing → SourceError."""
    if name not in tree:
        raise SourceError(f"{origin / name}: missing; {why}")
    try:
        text = tree[name]().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"{origin / name}: unreadable text ({error})") from error
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _archive_tree(path: Path) -> dict[str, Callable[[], bytes]]:
    """Every file of the archive, read into memory in one sequential pass (a compressed
    archive cannot be read out of order cheaply, and forked decoders share the bytes)."""
    try:
        with tarfile.open(path) as archive:
            contents, folders = {}, set()
            for member in archive:
                name = member.name.removeprefix("./").lstrip("/")
                if member.isfile():
                    contents[name] = archive.extractfile(member).read()  # type: ignore[union-attr]
                elif member.isdir() and name:
                    folders.add(f"{name.rstrip('/')}/")
            # Read to the end so that gzip/bz2/xz verify their checksum: tar itself has
            # none for file contents, and a corrupt block would otherwise go unnoticed.
            while archive.fileobj.read(1 << 20):  # type: ignore[union-attr]
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as error:
        raise SourceError(f"{path}: not a readable tar archive ({error})") from error
    holding = {name[: i + 1] for name in [*contents, *folders] for i in range(len(name) - 1) if name[i] == "/"}
    contents.update((folder, b"") for folder in folders - holding)  # empty folders, as directory trees list them
    return {name: _in_memory(data) for name, data in contents.items()}


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
                samples.append(Sample(f"{name}#{row}", label, _in_memory(array)))
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


STL_IMAGE_BYTES = 3 * 96 * 96  # one STL-10 image: 3 column-major 96×96 planes


def _stl10_image(images: np.ndarray, index: int) -> np.ndarray:
    # The official reader: reshape to (N, 3, 96, 96), then transpose (0, 3, 2, 1) to HWC.
    return np.ascontiguousarray(images[index].transpose(2, 1, 0))


def _stl10_layout(tree: dict, origin: Path) -> Source | None:
    """STL-10 binaries (``stl10_binary/``): ``{train,test}_{X,y}.bin``, ``unlabeled_X.bin``
    and ``class_names.txt``. Pixels stay in the (memory-mapped) file until a sample is read;
    labels 1…10 become 0…9, and every image of ``unlabeled`` gets label −1."""
    splits = [split for split in ("train", "test", "unlabeled") if f"{split}_X.bin" in tree]
    if not splits:
        return None
    lines = _text_lines(tree, "class_names.txt", origin, "STL-10 binaries need their class names")
    classes = [line for _, line in lines]
    source = Source(classes, kind="stl10")
    for split in splits:
        x_name = f"{split}_X.bin"
        data = _uint8_view(tree[x_name], x_name, origin)
        if len(data) == 0 or len(data) % STL_IMAGE_BYTES:
            raise SourceError(
                f"{origin / x_name}: {len(data)} bytes, not a whole number of 3×96×96 images "
                f"({STL_IMAGE_BYTES} bytes each); truncated?"
            )
        images = data.reshape(-1, 3, 96, 96)
        if split == "unlabeled":
            labels = [-1] * len(images)
        else:
            y_name = f"{split}_y.bin"
            if y_name not in tree:
                raise SourceError(f"{origin / y_name}: missing; the labels of {x_name}")
            raw = _uint8_view(tree[y_name], y_name, origin)
            if len(raw) != len(images):
                raise SourceError(f"{origin / y_name}: {len(raw)} labels but {x_name} holds {len(images)} images")
            if not 1 <= int(raw.min()) <= int(raw.max()) <= len(classes):
                raise SourceError(
                    f"{origin / y_name}: labels outside 1…{len(classes)} "
                    f"(class_names.txt names {len(classes)} classes)"
                )
            labels = (raw.astype(np.int64) - 1).tolist()
        source.splits[split] = [
            Sample(f"{x_name}#{i}", label, functools.partial(_stl10_image, images, i))
            for i, label in enumerate(labels)
        ]
    return source


def _tiny_imagenet_layout(tree: dict, origin: Path) -> Source | None:
    """Tiny-ImageNet-200 as distributed: ``wnids.txt``, ``train/<wnid>/images/*.JPEG`` and
    ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``. Classes are the sorted
    wnids of ``wnids.txt``; ``test/`` (unlabelled) is skipped. (A re-packed ImageFolder
    copy, ``train/<wnid>/*.JPEG``, is left to the ImageFolder reader.)"""
    train = []
    for name in tree:
        parts = name.split("/")
        if (
            len(parts) == 4
            and parts[0] == "train"
            and parts[2] == "images"
            and Path(parts[3]).suffix.lower() in IMAGE_SUFFIXES
        ):
            train.append((name, parts[1]))
    if "wnids.txt" not in tree or not train:
        return None
    classes = sorted({line.split()[0] for _, line in _text_lines(tree, "wnids.txt", origin, "")})
    index = {wnid: i for i, wnid in enumerate(classes)}
    source = Source(classes, kind="tiny-imagenet")
    samples = []
    for name, wnid in sorted(train):
        if wnid not in index:
            raise SourceError(f"{origin / name}: class folder '{wnid}' is not in wnids.txt")
        samples.append(Sample(name, index[wnid], tree[name]))
    source.splits["train"] = samples

    annotations = "val/val_annotations.txt"
    labels: dict[str, int] = {}
    for number, line in _text_lines(tree, annotations, origin, "it labels the images of val/images/"):
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2:
            raise SourceError(f"{origin / annotations}: line {number}: expected 'file<TAB>wnid…', got '{line}'")
        file, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise SourceError(f"{origin / annotations}: line {number}: wnid '{wnid}' is not in wnids.txt")
        if file in labels:
            raise SourceError(f"{origin / annotations}: line {number}: '{file}' is labelled twice")
        if f"val/images/{file}" not in tree:
            raise SourceError(f"{origin / annotations}: line {number}: val/images/{file} not found")
        labels[file] = index[wnid]
    samples = []
    for name in sorted(tree):
        parts = name.split("/")
        if len(parts) == 3 and parts[:2] == ["val", "images"] and Path(parts[2]).suffix.lower() in IMAGE_SUFFIXES:
            if parts[2] not in labels:
                raise SourceError(f"{origin / name}: no label in {annotations}")
            samples.append(Sample(name, labels[parts[2]], tree[name]))
    source.splits["val"] = samples
    return source


def _nabirds_layout(tree: dict, origin: Path) -> Source | None:
    """NABirds (and CUB-200-2011, which shares its files): ``images.txt`` ("<id> <path under
    images/>"), ``image_class_labels.txt``, ``train_test_split.txt`` (1 train, 0 test) and
    ``classes.txt``. Class ids are sparse: the ids in use, sorted, become 0…K−1, named by
    ``classes.txt``. Samples keep the order of ``images.txt``."""
    if "images.txt" not in tree or not {"image_class_labels.txt", "train_test_split.txt"} & tree.keys():
        return None

    def table(name: str, why: str) -> dict[str, tuple[int, str]]:
        rows: dict[str, tuple[int, str]] = {}
        for number, line in _text_lines(tree, name, origin, why):
            fields = line.split(None, 1)
            if len(fields) != 2:
                raise SourceError(f"{origin / name}: line {number}: expected '<id> <value>', got '{line}'")
            if fields[0] in rows:
                raise SourceError(f"{origin / name}: line {number}: id '{fields[0]}' appears twice")
            rows[fields[0]] = (number, fields[1].strip())
        return rows

    def integer(name: str, number: int, value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise SourceError(f"{origin / name}: line {number}: '{value}' is not an integer") from None

    images = table("images.txt", "")
    class_of = table("image_class_labels.txt", "it gives each image of images.txt its class")
    is_train = table("train_test_split.txt", "it puts each image of images.txt in train or test")
    names = table("classes.txt", "it names the class ids of image_class_labels.txt")
    for name, rows in (("image_class_labels.txt", class_of), ("train_test_split.txt", is_train)):
        for image_id in images:
            if image_id not in rows:
                raise SourceError(f"{origin / name}: no entry for image '{image_id}' of images.txt")
        for image_id, (number, _) in rows.items():
            if image_id not in images:
                raise SourceError(f"{origin / name}: line {number}: image '{image_id}' is not in images.txt")
    class_ids = {image_id: integer("image_class_labels.txt", *row) for image_id, row in class_of.items()}
    used = sorted(set(class_ids.values()))
    by_number = {integer("classes.txt", number, key): label for key, (number, label) in names.items()}
    for class_id in used:
        if class_id not in by_number:
            raise SourceError(f"{origin / 'classes.txt'}: no name for class id {class_id}")
    index = {class_id: i for i, class_id in enumerate(used)}
    source = Source([by_number[class_id] for class_id in used], kind="nabirds")
    splits: dict[str, list[Sample]] = {"train": [], "test": []}
    for image_id, (number, relative) in images.items():
        path = f"images/{relative.lstrip('/')}"
        if path not in tree:
            raise SourceError(f"{origin / 'images.txt'}: line {number}: {path} not found")
        flag_number, flag = is_train[image_id]
        if flag not in ("0", "1"):
            raise SourceError(f"{origin / 'train_test_split.txt'}: line {flag_number}: '{flag}' is not 0 or 1")
        split = "train" if flag == "1" else "test"
        splits[split].append(Sample(path, index[class_ids[image_id]], tree[path]))
    source.splits = {split: samples for split, samples in splits.items() if samples}
    return source


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
        return _note_leftovers(tree, source, {split: f"{split}/" for split in source.splits})
    if class_folders(""):
        classes = class_folders("")
        source = Source(classes, {"train": _image_folder(tree, "", classes, origin)}, "imagefolder")
        return _note_leftovers(tree, source, {"train": ""})
    return None


def _note_leftovers(tree: dict, source: Source, prefixes: dict[str, str]) -> Source:
    """Record what the split folders (``prefixes``: split → its folder in ``tree``) hold
    besides samples: files that are not images (or lie deeper than a class folder), and
    class folders without a single image (empty ones are ``"name/"`` entries of ``tree``)."""
    for split, prefix in prefixes.items():
        used = {sample.path for sample in source.splits[split]}
        with_images = {path[len(prefix) :].split("/")[0] for path in used}
        folders = set()
        for name in sorted(tree):
            parts = name[len(prefix) :].split("/")
            if not name.startswith(prefix) or len(parts) < 2:  # top-level files: documentation
                continue
            folders.add(parts[0])
            if name not in used and not name.endswith("/"):
                source.ignored.append(name)
        source.empty_folders += [f"{prefix}{folder}/" for folder in sorted(folders - with_images)]
    return source


def _words_txt_names(lines: list[tuple[int, str]]) -> dict[str, str]:
    """ImageNet's ``words.txt`` ("<wnid><TAB>synonym, synonym, …"): each id's first synonym."""
    names = {}
    for _, line in lines:
        wnid, _, words = line.partition("\t") if "\t" in line else line.partition(" ")
        if words.strip():
            names[wnid.strip()] = words.split(",")[0].strip()
    return names


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
    # Specific layouts first: the generic ImageFolder one would claim some of their files.
    for layout in (_cifar_layout, _stl10_layout, _tiny_imagenet_layout, _nabirds_layout, _image_folder_layout):
        source = layout(tree, path)
        if source is not None:
            if not any(source.splits.values()):
                break
            if "words.txt" in tree:  # ImageNet's synset words, as Tiny-ImageNet ships them
                source.names = _words_txt_names(_text_lines(tree, "words.txt", path, ""))
            return source
    raise SourceError(
        f"{path}: unknown layout (expected train/<class>/<image> with test/ or val/, "
        "<class>/<image>, CIFAR-10/100 python batches, STL-10 binaries, Tiny-ImageNet-200 "
        "or NABirds)"
    )


HELD_OUT = ("test", "val")


def duplicates_across_splits(source: Source) -> list[tuple[str, str]]:
    """(held-out path, training path) of every held-out image (``test``/``val``) whose bytes
    — the encoded file, or the pixels of an array source such as CIFAR — equal those of an
    image of another split: the same picture trained on and evaluated on."""
    seen: dict[bytes, str] = {}
    for split, samples in source.splits.items():
        if split not in HELD_OUT:
            seen.update((_digest(sample), sample.path) for sample in reversed(samples))  # first one wins
    return [
        (sample.path, seen[digest])
        for split, samples in source.splits.items()
        if split in HELD_OUT
        for sample in samples
        if (digest := _digest(sample)) in seen
    ]


def _digest(sample: Sample) -> bytes:
    data = sample.read()
    return hashlib.blake2b(data.tobytes() if isinstance(data, np.ndarray) else data, digest_size=16).digest()
