"""tools/convert.py: every source layout round-trips exactly; bad inputs fail cleanly.

Pixels are checked against an independent decode (PIL, or the CIFAR pickle arrays) of
tiny data sets written here; failures are checked through a real subprocess: exit status
2, one ``convert.py: error: …`` line naming the culprit, and nothing left behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "convert.py"
sys.path.insert(0, str(ROOT))

from conversion import decode as decode_module  # noqa: E402
from pipelines.dataset import read_info  # noqa: E402
from pipelines.formats import tensor as tensor_format  # noqa: E402
from pipelines.formats.tensor import read_split  # noqa: E402


def _load_tool():
    spec = importlib.util.spec_from_file_location("convert_tool", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


tool = _load_tool()

CLASSES = ["cat", "dog", "frog"]


# --- tiny sources ----------------------------------------------------------------------


def _pixels(seed: int, height: int, width: int, channels: int = 3) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_image(path: Path, seed: int, width: int = 12, height: int = 10, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    image = Image.fromarray(_pixels(seed, height, width, channels))
    if path.suffix == ".jpg":
        image.save(path, quality=90)
    else:
        image.save(path)


def make_image_folder(
    root: Path,
    splits: tuple[str, ...] = ("train", "test"),
    per_class: dict[str, int] | None = None,
    suffix: str = ".png",
    width: int = 12,
    height: int = 10,
) -> None:
    """``root/<split>/<class>/<n><suffix>``; with ``splits=("",)`` bare class folders."""
    per_class = per_class or {"train": 3, "test": 2, "val": 2, "": 3}
    seed = 0
    for split in splits:
        for name in CLASSES:
            for n in range(per_class[split]):
                seed += 1
                write_image(root / split / name / f"{n:03d}{suffix}", seed, width, height)


def expected_image_folder(
    root: Path, splits: tuple[str, ...]
) -> dict[str, tuple[np.ndarray, list[int], list[str]]]:
    """Independent reading: sorted files per split, PIL-decoded, converted to RGB."""
    out = {}
    for split in splits:
        base = root / split if split else root
        files = sorted(p for p in base.glob("*/*") if p.is_file())
        images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
        labels = [CLASSES.index(p.parent.name) for p in files]
        names = [p.relative_to(root).as_posix() for p in files]
        out[split or "train"] = (images, labels, names)
    return out


def make_archive(folder: Path, archive: Path, top: str | None) -> Path:
    """``folder``'s contents as a tar/tar.gz, under ``top/`` or at the archive root."""
    mode = "w:gz" if archive.name.endswith(".gz") else "w"
    with tarfile.open(archive, mode) as tar:
        for path in sorted(folder.rglob("*")):
            name = path.relative_to(folder).as_posix()
            tar.add(path, arcname=f"{top}/{name}" if top else name, recursive=False)
    return archive


CIFAR10_NAMES = [f"class{i}" for i in range(10)]
CIFAR100_NAMES = [f"fine{i}" for i in range(100)]


def make_cifar10(root: Path, rows: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    root.mkdir(parents=True)
    rng = np.random.default_rng(10)
    train_data, train_labels = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, (rows, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, rows)]
        batch = {
            b"batch_label": b"training batch %d of 5" % i,
            b"data": data,
            b"labels": labels,
            b"filenames": [b"f%d.png" % r for r in range(rows)],
        }
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
        train_data.append(data)
        train_labels += labels
    data = rng.integers(0, 256, (rows + 1, 3072), dtype=np.uint8)
    labels = [int(x) for x in rng.integers(0, 10, rows + 1)]
    (root / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
    meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    (root / "readme.html").write_text("<html></html>")

    def hwc(rows_: np.ndarray) -> np.ndarray:
        return rows_.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)

    return {"train": (hwc(np.concatenate(train_data)), train_labels), "test": (hwc(data), labels)}


def make_cifar100(root: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    root.mkdir(parents=True)
    rng = np.random.default_rng(100)
    expected = {}
    for split, rows in (("train", 6), ("test", 3)):
        data = rng.integers(0, 256, (rows, 3072), dtype=np.uint8)
        fine = [int(x) for x in rng.integers(0, 100, rows)]
        batch = {b"data": data, b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine]}
        (root / split).write_bytes(pickle.dumps(batch, protocol=4))
        expected[split] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), fine)
    meta = {
        b"fine_label_names": [n.encode() for n in CIFAR100_NAMES],
        b"coarse_label_names": [b"coarse%d" % i for i in range(20)],
    }
    (root / "meta").write_bytes(pickle.dumps(meta, protocol=4))
    return expected


# --- running and checking ----------------------------------------------------------------


def convert(capsys, source: Path, out: Path, *extra: str) -> str:
    """Run the tool in-process; returns its one output line."""
    tool.main([str(source), str(out), "--workers", "2", *extra])
    return capsys.readouterr().out.strip()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_output(out: Path, source: Path, kind: str, classes: list[str], expected: dict) -> dict:
    """Compare a converted data set exactly with ``expected`` {split: (images, labels[, files])}."""
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format"] == "tensor" and meta["version"] == 1
    assert meta["source"] == str(source)
    assert meta["source_kind"] == kind
    assert meta["classes"] == classes
    assert list(meta["splits"]) == list(expected)
    first = next(iter(expected.values()))[0]
    assert meta["image_size"] == list(first.shape[1:3])
    info = read_info(out)
    assert info.num_classes == len(classes) and info.image_size == tuple(first.shape[1:3])
    for split, (images, labels, *files) in expected.items():
        entry = meta["splits"][split]
        assert entry["count"] == len(labels)
        stored = np.load(out / split / "images.npy", mmap_mode="r")
        assert isinstance(stored, np.memmap)
        assert stored.dtype == np.uint8 and stored.shape == images.shape
        np.testing.assert_array_equal(stored, images)
        stored_labels = np.load(out / split / "labels.npy")
        assert stored_labels.dtype == np.int64 and stored_labels.tolist() == list(labels)
        assert np.load(out / split / "indices.npy").tolist() == list(range(len(labels)))
        if files:
            assert (out / split / "files.txt").read_text().splitlines() == files[0]
        for name, digest in entry["sha256"].items():
            assert file_sha256(out / split / name) == digest, (split, name)
        assert set(entry["sha256"]) == {"images.npy", "labels.npy", "indices.npy"}
        images_, labels_, indices_ = read_split(info, split)
        assert images_.shape == images.shape and len(labels_) == len(indices_) == len(labels)
    return meta


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("held_out", ["test", "val"])
def test_image_folder_directory(tmp_path, capsys, held_out):
    source = tmp_path / "src"
    make_image_folder(source, ("train", held_out))
    out = tmp_path / "out" / "data"
    line = convert(capsys, source, out)
    assert line.startswith(f"{out}: train 9, {held_out} 6 images of 10×12, 3 classes, round trip checked")
    expected = expected_image_folder(source, ("train", held_out))
    check_output(out, source, "imagefolder", CLASSES, expected)
    assert read_info(out).eval_split == held_out


def test_bare_class_folders(tmp_path, capsys):
    source = tmp_path / "src"
    make_image_folder(source, ("",))
    out = tmp_path / "out"
    convert(capsys, source, out)
    check_output(out, source, "imagefolder", CLASSES, expected_image_folder(source, ("",)))


def test_single_top_level_folder_directory(tmp_path, capsys):
    source = tmp_path / "src"
    make_image_folder(source / "mydata")
    (source / "mydata" / "README.txt").write_text("not an image")
    out = tmp_path / "out"
    convert(capsys, source, out)
    expected = expected_image_folder(source / "mydata", ("train", "test"))
    expected = {split: (images, labels) for split, (images, labels, _) in expected.items()}
    check_output(out, source, "imagefolder", CLASSES, expected)
    assert (out / "train" / "files.txt").read_text().splitlines()[0] == "train/cat/000.png"


@pytest.mark.parametrize(
    "archive_name, top",
    [("data.tar", "mydata"), ("data.tar.gz", "mydata"), ("data.tar.gz", None), ("data.tar", None)],
)
def test_image_folder_archive(tmp_path, capsys, archive_name, top):
    folder = tmp_path / "folder"
    make_image_folder(folder, ("train", "val"))
    archive = make_archive(folder, tmp_path / archive_name, top)
    out = tmp_path / "out"
    convert(capsys, archive, out)
    check_output(out, archive, "imagefolder", CLASSES, expected_image_folder(folder, ("train", "val")))


def test_jpeg_matches_pil_decode(tmp_path, capsys):
    source = tmp_path / "src"
    make_image_folder(source, suffix=".jpg", width=17, height=13)
    out = tmp_path / "out"
    convert(capsys, source, out)
    check_output(out, source, "imagefolder", CLASSES, expected_image_folder(source, ("train", "test")))


def test_mixed_modes_convert_to_rgb(tmp_path, capsys):
    """Gray repeated, alpha composited on white, palette colours: every image becomes RGB."""
    source = tmp_path / "src"
    write_image(source / "train" / "cat" / "a.png", 1, mode="L")
    write_image(source / "train" / "cat" / "b.png", 2, mode="RGBA")
    write_image(source / "train" / "dog" / "c.jpg", 3, mode="L")
    write_image(source / "train" / "dog" / "d.png", 4, mode="RGB")
    Image.fromarray(_pixels(5, 10, 12)).convert("P").save(source / "train" / "dog" / "e.png")
    out = tmp_path / "out"
    convert(capsys, source, out)
    stored = np.load(out / "train" / "images.npy")
    assert stored.shape == (5, 10, 12, 3)
    gray = np.asarray(Image.open(source / "train" / "cat" / "a.png"))
    np.testing.assert_array_equal(stored[0], np.repeat(gray[:, :, None], 3, axis=2))
    rgba = np.asarray(Image.open(source / "train" / "cat" / "b.png")).astype(np.int64)
    alpha = rgba[:, :, 3:]  # composited on the default white: round(a·c/255 + (1 − a/255)·255)
    on_white = np.rint(alpha * rgba[:, :, :3] / 255 + (255 - alpha) * 255 / 255).astype(np.uint8)
    np.testing.assert_array_equal(stored[1], on_white)
    for i, name in enumerate(["dog/c.jpg", "dog/d.png", "dog/e.png"], start=2):
        expected = np.asarray(Image.open(source / "train" / name).convert("RGB"))
        np.testing.assert_array_equal(stored[i], expected)


def _reference_resize(path: Path, size: int) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    width, height = image.size
    if width < height:
        new = (size, round(height * size / width))
    else:
        new = (round(width * size / height), size)
    image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def test_size_resizes_shorter_side_and_centre_crops(tmp_path, capsys):
    source = tmp_path / "src"
    write_image(source / "train" / "cat" / "wide.png", 1, width=41, height=23)
    write_image(source / "train" / "cat" / "tall.jpg", 2, width=20, height=37)
    write_image(source / "train" / "dog" / "square.png", 3, width=30, height=30)
    write_image(source / "train" / "dog" / "exact.png", 4, width=16, height=16)
    write_image(source / "test" / "cat" / "gray.png", 5, width=50, height=19, mode="L")
    out = tmp_path / "out"
    line = convert(capsys, source, out, "--size", "16")
    assert "train 4, test 1 images of 16×16" in line
    files = {
        "train": ["cat/tall.jpg", "cat/wide.png", "dog/exact.png", "dog/square.png"],
        "test": ["cat/gray.png"],
    }
    expected = {}
    for split, names in files.items():
        images = np.stack([_reference_resize(source / split / name, 16) for name in names])
        labels = [["cat", "dog"].index(name.split("/")[0]) for name in names]
        expected[split] = (images, labels, [f"{split}/{name}" for name in names])
    meta = check_output(out, source, "imagefolder", ["cat", "dog"], expected)
    assert meta["resize"]["size"] == 16
    # an image already SIZE×SIZE is stored untouched
    np.testing.assert_array_equal(
        expected["train"][0][2], np.asarray(Image.open(source / "train/dog/exact.png"))
    )


def test_cifar10_directory_and_archive(tmp_path, capsys):
    source = tmp_path / "src" / "cifar-10-batches-py"
    expected = make_cifar10(source)
    out = tmp_path / "out"
    line = convert(capsys, source, out)
    assert "train 20, test 5 images of 32×32, 10 classes" in line
    files = {
        "train": [f"data_batch_{b}#{r}" for b in range(1, 6) for r in range(4)],
        "test": [f"test_batch#{r}" for r in range(5)],
    }
    check_output(
        out, source, "cifar10", CIFAR10_NAMES, {split: (*expected[split], files[split]) for split in expected}
    )
    archive = make_archive(tmp_path / "src", tmp_path / "cifar-10-python.tar.gz", None)
    out2 = tmp_path / "out2"
    convert(capsys, archive, out2)
    check_output(out2, archive, "cifar10", CIFAR10_NAMES, expected)


def test_cifar100_directory_and_archive(tmp_path, capsys):
    source = tmp_path / "src" / "cifar-100-python"
    expected = make_cifar100(source)
    out = tmp_path / "out"
    convert(capsys, source, out)
    check_output(out, source, "cifar100", CIFAR100_NAMES, expected)
    archive = make_archive(tmp_path / "src", tmp_path / "cifar-100-python.tar.gz", None)
    out2 = tmp_path / "out2"
    convert(capsys, archive, out2)
    check_output(out2, archive, "cifar100", CIFAR100_NAMES, expected)
    assert file_sha256(out / "train" / "images.npy") == file_sha256(out2 / "train" / "images.npy")


def test_many_chunks_across_workers_keep_order(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(decode_module, "CHUNK", 2)
    source = tmp_path / "src"
    make_image_folder(source, per_class={"train": 5, "test": 3})
    out = tmp_path / "out"
    convert(capsys, source, out)
    check_output(out, source, "imagefolder", CLASSES, expected_image_folder(source, ("train", "test")))


def test_overwrite_and_check_zero(tmp_path, capsys):
    source = tmp_path / "src"
    make_image_folder(source)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    line = convert(capsys, source, out, "--overwrite", "--check", "0")
    assert "round trip skipped" in line
    assert not (out / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    check_output(out, source, "imagefolder", CLASSES, expected_image_folder(source, ("train", "test")))


def test_missing_parent_directories_are_created(tmp_path, capsys):
    source = tmp_path / "src"
    make_image_folder(source)
    out = tmp_path / "a" / "b" / "out"
    convert(capsys, source, out)
    assert (out / "meta.json").is_file()


# --- interruption ----------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["write_split", "round_trip_check"])
def test_interrupt_leaves_nothing(tmp_path, monkeypatch, stage):
    source = tmp_path / "src"
    make_image_folder(source)
    parent = tmp_path / "outs"
    parent.mkdir()
    original = getattr(tensor_format.FORMAT, stage)
    calls = []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # after the first split is on disk
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(tensor_format, "FORMAT", dataclasses.replace(tensor_format.FORMAT, **{stage: interrupt}))
    with pytest.raises(KeyboardInterrupt):
        tool.convert(tool.ConvertConfig(source, parent / "out", workers=2))
    assert list(parent.iterdir()) == []


def test_worker_error_shuts_pool_down(tmp_path, monkeypatch):
    """A decoding error in a worker comes back as one SourceError; no worker stays alive."""
    import multiprocessing

    monkeypatch.setattr(decode_module, "CHUNK", 2)
    source = tmp_path / "src"
    make_image_folder(source, per_class={"train": 4, "test": 2})
    (source / "train" / "dog" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    parent = tmp_path / "outs"
    parent.mkdir()
    with pytest.raises(tool.SourceError, match=r"train/dog/002\.png"):
        tool.convert(tool.ConvertConfig(source, parent / "out", workers=2))
    assert list(parent.iterdir()) == []
    assert multiprocessing.active_children() == []


# --- bad inputs, through a real process --------------------------------------------------


def _png_bytes(seed: int, width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_pixels(seed, height, width)).save(buffer, format="PNG")
    return buffer.getvalue()


def _bad_cases(base: Path) -> dict[str, tuple[list[str], str]]:
    """name → (arguments, text the error line must contain); OUT is base/<name>/out/data."""
    cases = {}

    def folder(name: str) -> Path:
        source = base / "sources" / name
        make_image_folder(source, per_class={"train": 2, "test": 1})
        return source

    missing = base / "sources" / "does-not-exist"
    cases["missing"] = ([str(missing)], str(missing))

    source = folder("corrupt-jpeg")
    (source / "train" / "dog" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    cases["corrupt-jpeg"] = ([str(source)], "train/dog/bad.jpg")

    source = folder("truncated-jpeg")
    buffer = io.BytesIO()
    Image.fromarray(_pixels(9, 64, 64)).save(buffer, format="JPEG")
    (source / "test" / "cat" / "cut.jpg").write_bytes(buffer.getvalue()[:300])
    cases["truncated-jpeg"] = ([str(source)], "test/cat/cut.jpg")

    source = base / "sources" / "unknown"
    (source / "a" / "b" / "c").mkdir(parents=True)
    (source / "a" / "b" / "c" / "x.png").write_bytes(_png_bytes(1, 4, 4))
    (source / "notes.txt").write_text("hello")
    cases["unknown-layout"] = ([str(source)], f"{source}: unknown layout")

    source = base / "sources" / "empty"
    source.mkdir(parents=True)
    cases["empty-dir"] = ([str(source)], f"{source}: unknown layout")

    archive = make_archive(folder("to-truncate"), base / "sources" / "truncated.tar.gz", "top")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    cases["truncated-tar-gz"] = ([str(archive)], str(archive))

    archive = make_archive(folder("to-corrupt"), base / "sources" / "corrupt.tar.gz", None)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    archive.write_bytes(bytes(data))
    cases["corrupt-tar-gz"] = ([str(archive)], str(archive))

    archive = make_archive(folder("to-cut-tar"), base / "sources" / "truncated.tar", None)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2 + 100])
    cases["truncated-tar"] = ([str(archive)], str(archive))

    not_tar = base / "sources" / "not-a-tar.tar.gz"
    not_tar.write_bytes(os.urandom(2000))
    cases["not-a-tar"] = ([str(not_tar)], str(not_tar))

    source = folder("differing-sizes")
    (source / "train" / "frog" / "big.png").write_bytes(_png_bytes(3, 20, 10))
    cases["differing-sizes"] = ([str(source)], "train/frog/big.png")

    source = folder("differing-split-sizes")
    shutil.rmtree(source / "test")
    (source / "test" / "cat").mkdir(parents=True)
    (source / "test" / "cat" / "big.png").write_bytes(_png_bytes(3, 20, 10))
    cases["differing-split-sizes"] = ([str(source)], "test/cat/big.png")

    source = folder("unknown-test-class")
    (source / "test" / "horse").mkdir()
    (source / "test" / "horse" / "x.png").write_bytes(_png_bytes(4, 12, 10))
    cases["unknown-test-class"] = ([str(source)], "test/horse/x.png")

    source = base / "sources" / "bad-cifar"
    make_cifar10(source, rows=2)
    batch = pickle.loads((source / "data_batch_3").read_bytes(), encoding="bytes")
    batch[b"data"] = batch[b"data"][:, :3000]
    (source / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    cases["bad-cifar-batch"] = ([str(source)], "data_batch_3")

    source = base / "sources" / "cifar-no-meta"
    make_cifar10(source, rows=2)
    (source / "batches.meta").unlink()
    cases["cifar-without-meta"] = ([str(source)], "batches.meta")

    source = folder("fine")
    cases["size-zero"] = ([str(source), "--size", "0"], "--size")
    cases["unknown-format"] = ([str(source), "--format", "bogus"], "--format")
    cases["bad-option"] = ([str(source), "--sise", "3"], "--sise")
    cases["out-exists"] = ([str(source)], "out/data: already exists")
    return cases


# Each process imports torch (through ``pipelines``), a few seconds of CPU: these run as
# real processes, in parallel; the other cases call the same ``main`` in-process.
SUBPROCESS_CASES = [
    "missing",
    "corrupt-jpeg",
    "truncated-tar-gz",
    "unknown-layout",
    "differing-sizes",
    "out-exists",
    "bad-option",
]
BAD_CASES = [
    *SUBPROCESS_CASES,
    "truncated-jpeg",
    "empty-dir",
    "corrupt-tar-gz",
    "truncated-tar",
    "not-a-tar",
    "differing-split-sizes",
    "unknown-test-class",
    "bad-cifar-batch",
    "cifar-without-meta",
    "size-zero",
    "unknown-format",
]


def _command(base: Path, name: str, args: list[str]) -> tuple[list[str], Path, list[str]]:
    parent = base / name / "out"
    parent.mkdir(parents=True)
    if name == "out-exists":
        (parent / "data").mkdir()
        (parent / "data" / "keep.txt").write_text("keep")
    before = sorted(p.name for p in parent.iterdir())
    return [args[0], str(parent / "data"), *args[1:], "--workers", "2"], parent, before


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    cases = _bad_cases(base)
    assert sorted(cases) == sorted(BAD_CASES)
    running, results = {}, {}
    for name, (args, _) in cases.items():
        command, parent, before = _command(base, name, args)
        if name in SUBPROCESS_CASES:
            process = subprocess.Popen(
                [sys.executable, str(SCRIPT), *command],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=base,
            )
            running[name] = (process, parent, before)
        else:
            results[name] = (None, command, parent, before)
    for name, (process, parent, before) in running.items():
        stdout, stderr = process.communicate(timeout=120)
        results[name] = ((process.returncode, stdout, stderr), None, parent, before)
    return cases, results


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_fails_cleanly(bad_runs, capsys, name):
    cases, results = bad_runs
    outcome, command, parent, before = results[name]
    if outcome is None:
        with pytest.raises(SystemExit) as exit_:
            tool.main(command)
        captured = capsys.readouterr()
        outcome = (exit_.value.code, captured.out, captured.err)
    returncode, stdout, stderr = outcome
    lines = stderr.splitlines()
    assert returncode == 2, stderr
    assert stdout == ""
    assert len(lines) == 1, stderr
    assert lines[0].startswith("convert.py: error: "), stderr
    assert cases[name][1] in lines[0], stderr
    assert sorted(p.name for p in parent.iterdir()) == before
    if name == "out-exists":
        assert [p.name for p in (parent / "data").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_interrupted_process_leaves_nothing(tmp_path, signum):
    """Ctrl-C (to the whole process group, as a terminal sends it) or SIGTERM while workers
    decode: exit status 130, one line, the pool stopped and nothing left behind. A FIFO
    posing as an image blocks its worker, so the signal always lands mid-conversion."""
    import signal
    import time

    source = tmp_path / "src"
    make_image_folder(source, per_class={"train": 2, "test": 1})
    os.mkfifo(source / "train" / "dog" / "zzz.png")
    parent = tmp_path / "outs"
    parent.mkdir()
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(source), str(parent / "out"), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # Wait on the condition however loaded the machine is (a fixed timeout failed CI).
        while not list(parent.glob(".out.partial-*/train")):
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        time.sleep(0.3)  # let the workers reach the FIFO; the outcome is the same if they have not
        assert process.poll() is None, process.communicate()
        if signum == "SIGINT":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert stdout == ""
    assert stderr.splitlines() == [f"convert.py: interrupted; {parent / 'out'} not written"]
    assert list(parent.iterdir()) == []
