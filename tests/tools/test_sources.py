"""tools/convert.py on the STL-10, Tiny-ImageNet-200 and NABirds layouts.

Each layout is written here as a tiny synthetic copy, converted by a real ``tools/convert.py``
process, and compared exactly with an independent reading: the arrays written for STL-10,
PIL decodes for the image files. Bad files must fail with exit status 2, one
``convert.py: error: …`` line naming the file, and nothing left behind. All processes are
started together (one module fixture) to keep the file fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from conversion.sources import SourceError, read_source  # noqa: E402

STL_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
WNIDS = ["n01443537", "n01629819", "n02124075"]
BIRD_CLASSES = {5: "Black-footed Albatross", 295: "Snow Goose (Blue morph)", 1000: "Eared Grebe"}


def _pixels(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _archive(folder: Path, archive: Path, top: str) -> Path:
    mode = "w:gz" if archive.name.endswith(".gz") else "w"
    with tarfile.open(archive, mode) as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=f"{top}/{path.relative_to(folder).as_posix()}", recursive=False)
    return archive


# --- tiny sources ----------------------------------------------------------------------


def make_stl10(root: Path, train: int = 4, test: int = 2, unlabeled: int = 4) -> dict:
    """``root`` as ``stl10_binary/``; returns {split: (N×96×96×3 images, labels 0…9 or −1)}."""
    root.mkdir(parents=True)
    (root / "class_names.txt").write_text("".join(f"{name}\n" for name in STL_CLASSES))
    rng = np.random.default_rng(96)
    expected = {}
    for split, count in (("train", train), ("test", test), ("unlabeled", unlabeled)):
        images = rng.integers(0, 256, (count, 96, 96, 3), dtype=np.uint8)
        # column-major planes: the official reader's transpose (0, 3, 2, 1) is its own inverse
        (root / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tobytes())
        if split == "unlabeled":
            labels = [-1] * count
        else:
            labels = [int(x) for x in rng.integers(0, 10, count)]
            labels[0] = 9  # the largest label (10 on disk) is exercised
            (root / f"{split}_y.bin").write_bytes(bytes(label + 1 for label in labels))
        expected[split] = (images, labels, [f"{split}_X.bin#{i}" for i in range(count)])
    (root / "fold_indices.txt").write_text("0 1\n2 3\n")
    return expected


def _write_jpeg(path: Path, seed: int, width: int = 8, height: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(seed, height, width)).save(path, format="JPEG", quality=90)


def make_tiny_imagenet(root: Path) -> dict:
    """``root`` as ``tiny-imagenet-200/``: 3 wnids × 2 train images, 4 val, 1 (skipped) test."""
    (root / "train").mkdir(parents=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in reversed(WNIDS)))  # not sorted on disk
    (root / "words.txt").write_text("".join(f"{w}\tname of {w}\n" for w in WNIDS))
    seed = 0
    for wnid in WNIDS:
        boxes = []
        for n in range(2):
            seed += 1
            _write_jpeg(root / "train" / wnid / "images" / f"{wnid}_{n}.JPEG", seed)
            boxes.append(f"{wnid}_{n}.JPEG\t0\t0\t7\t7\n")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    val = {"val_0.JPEG": WNIDS[2], "val_1.JPEG": WNIDS[0], "val_2.JPEG": WNIDS[2], "val_10.JPEG": WNIDS[1]}
    for name in val:
        seed += 1
        _write_jpeg(root / "val" / "images" / name, seed)
    (root / "val" / "val_annotations.txt").write_text("".join(f"{n}\t{w}\t1\t2\t6\t7\n" for n, w in val.items()))
    _write_jpeg(root / "test" / "images" / "test_0.JPEG", 99)

    def read(paths: list[Path]) -> np.ndarray:
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])

    train = sorted((root / "train").glob("*/images/*.JPEG"))
    val_files = sorted((root / "val" / "images").glob("*.JPEG"))
    return {
        "train": (read(train), [WNIDS.index(p.parent.parent.name) for p in train],
                  [p.relative_to(root).as_posix() for p in train]),
        "val": (read(val_files), [WNIDS.index(val[p.name]) for p in val_files],
                [p.relative_to(root).as_posix() for p in val_files]),
    }  # fmt: skip


NABIRDS_IMAGES = [  # image id, folder, file, class id, train, (width, height)
    ("0000139e-21dc-4d0c-bfe1-4cae3c85c829", "0817", "0000139e21dc.jpg", 1000, 1, (31, 20)),
    ("0000d9fc-4e02-4c06-a0af-a55cfb16b12b", "0860", "0000d9fc4e02.jpg", 5, 0, (17, 40)),
    ("00019306-9d83-4334-b255-a447742edce3", "0900", "000193069d83.jpg", 295, 1, (16, 16)),
    ("0001afd4-99a1-4a67-b940-d419413e23b3", "0817", "0001afd499a1.jpg", 5, 1, (24, 24)),
]


def make_nabirds(root: Path) -> dict:
    """``root`` as ``nabirds/``: 4 images in 3 folders, sparse class ids, mixed sizes."""
    root.mkdir(parents=True)
    for seed, (_, folder, file, _, _, (width, height)) in enumerate(NABIRDS_IMAGES):
        _write_jpeg(root / "images" / folder / file, seed, width, height)
    lines = {
        "images.txt": [f"{i} {folder}/{file}" for i, folder, file, *_ in NABIRDS_IMAGES],
        "image_class_labels.txt": [f"{i} {c}" for i, _, _, c, *_ in NABIRDS_IMAGES],
        "train_test_split.txt": [f"{i} {t}" for i, _, _, _, t, _ in NABIRDS_IMAGES],
        # unused ids (0, 1, 7) as in NABirds, whose classes.txt also lists the hierarchy's inner nodes
        "classes.txt": ["0 Birds", "1 Perching Birds", "7 Geese"] + [f"{k} {v}" for k, v in BIRD_CLASSES.items()],
    }
    for name, rows in lines.items():
        (root / name).write_text("".join(f"{row}\n" for row in rows))
    (root / "hierarchy.txt").write_text("5 1\n")
    used = sorted(BIRD_CLASSES)
    expected = {}
    for split, flag in (("train", 1), ("test", 0)):
        rows = [row for row in NABIRDS_IMAGES if row[4] == flag]
        paths = [root / "images" / folder / file for _, folder, file, *_ in rows]
        expected[split] = (
            np.stack([_reference_resize(p, 16) for p in paths]),
            [used.index(row[3]) for row in rows],
            [f"images/{folder}/{file}" for _, folder, file, *_ in rows],
        )
    return expected


def _reference_resize(path: Path, size: int) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    width, height = image.size
    new = (size, round(height * size / width)) if width < height else (round(width * size / height), size)
    if new != image.size:
        image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


# --- bad sources -----------------------------------------------------------------------


def _bad_sources(base: Path) -> dict[str, tuple[Path, str]]:
    """name → (source, text the error line must contain)."""
    cases = {}

    source = base / "stl-truncated" / "stl10_binary"
    make_stl10(source, train=2, test=1, unlabeled=1)
    data = (source / "train_X.bin").read_bytes()
    (source / "train_X.bin").write_bytes(data[:-100])
    cases["stl-truncated"] = (source, f"{source / 'train_X.bin'}: {len(data) - 100} bytes")

    source = base / "stl-count" / "stl10_binary"
    make_stl10(source, train=2, test=2, unlabeled=1)
    (source / "test_y.bin").write_bytes(b"\x01\x02\x03")
    cases["stl-count"] = (source, f"{source / 'test_y.bin'}: 3 labels but test_X.bin holds 2 images")

    source = base / "tin-no-annotations" / "tiny-imagenet-200"
    make_tiny_imagenet(source)
    (source / "val" / "val_annotations.txt").unlink()
    cases["tin-no-annotations"] = (source, f"{source / 'val' / 'val_annotations.txt'}: missing")

    source = base / "nabirds-no-label" / "nabirds"
    make_nabirds(source)
    labels = (source / "image_class_labels.txt").read_text().splitlines()
    (source / "image_class_labels.txt").write_text("\n".join(labels[:2] + labels[3:]) + "\n")
    cases["nabirds-no-label"] = (
        source,
        f"{source / 'image_class_labels.txt'}: no entry for image '{NABIRDS_IMAGES[2][0]}' of images.txt",
    )

    source = base / "unknown" / "src"  # wnids.txt and a stray images.txt claim no layout alone
    source.mkdir(parents=True)
    (source / "wnids.txt").write_text("n01443537\n")
    (source / "images.txt").write_text("1 a/b.jpg\n")
    _write_jpeg(source / "images" / "a" / "b.jpg", 1)
    cases["unknown"] = (source, f"{source}: unknown layout")
    return cases


# --- all conversions, run together -----------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name → (source, out, expected or error text, (returncode, stdout, stderr))."""
    base = tmp_path_factory.mktemp("sources")
    jobs = {}
    stl = base / "stl" / "stl10_binary"
    expected = make_stl10(stl)
    jobs["stl-dir"] = (stl, [], expected)
    jobs["stl-tgz"] = (_archive(stl, base / "stl10_binary.tar.gz", "stl10_binary"), [], expected)
    tin = base / "tin" / "tiny-imagenet-200"
    expected = make_tiny_imagenet(tin)
    jobs["tin-dir"] = (tin, [], expected)
    jobs["tin-tar"] = (_archive(tin, base / "tiny-imagenet-200.tar", "tiny-imagenet-200"), [], expected)
    birds = base / "birds" / "nabirds"
    jobs["nabirds-dir"] = (birds, ["--size", "16"], make_nabirds(birds))
    for name, (source, text) in _bad_sources(base / "bad").items():
        jobs[name] = (source, [], text)
    processes = {}
    for name, (source, extra, _) in jobs.items():
        out = base / "outs" / name / "data"
        (base / "outs" / name).mkdir(parents=True)
        command = [sys.executable, "tools/convert.py", str(source), str(out), "--workers", "1", *extra]
        processes[name] = (out, subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                 text=True))  # fmt: skip
    results = {}
    for name, (out, process) in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        source, _, expected = jobs[name]
        results[name] = (source, out, expected, (process.returncode, stdout, stderr))
    return results


def check_output(out: Path, source: Path, kind: str, classes: list[str], expected: dict) -> dict:
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary folders
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"] == str(source) and meta["source_kind"] == kind
    assert meta["classes"] == classes
    assert list(meta["splits"]) == list(expected)
    for split, (images, labels, files) in expected.items():
        assert meta["splits"][split]["count"] == len(labels)
        stored = np.load(out / split / "images.npy", mmap_mode="r")
        assert stored.dtype == np.uint8 and stored.shape == images.shape
        np.testing.assert_array_equal(stored, images)
        stored_labels = np.load(out / split / "labels.npy")
        assert stored_labels.dtype == np.int64 and stored_labels.tolist() == labels
        assert (out / split / "files.txt").read_text().splitlines() == files
    return meta


def _succeeded(result) -> tuple[Path, Path, dict]:
    source, out, expected, (returncode, stdout, stderr) = result
    assert returncode == 0, stderr
    return source, out, expected


@pytest.mark.parametrize("name", ["stl-dir", "stl-tgz"])
def test_stl10_round_trip(runs, name):
    source, out, expected = _succeeded(runs[name])
    meta = check_output(out, source, "stl10", STL_CLASSES, expected)
    assert meta["image_size"] == [96, 96]
    assert meta["splits"]["unlabeled"]["checked"] == 4
    assert np.load(out / "unlabeled" / "labels.npy").tolist() == [-1] * 4


def test_stl10_samples_are_memory_mapped_views(tmp_path):
    expected = make_stl10(tmp_path / "stl10_binary", train=2, test=1, unlabeled=3)
    source = read_source(tmp_path)  # the single top folder is looked through
    assert source.kind == "stl10" and list(source.splits) == ["train", "test", "unlabeled"]
    sample = source.splits["unlabeled"][2]
    assert isinstance(sample.read.args[0], np.memmap)  # the file, not a copy, backs every sample
    assert sample.path == "unlabeled_X.bin#2" and sample.label == -1
    image = sample.read()
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, expected["unlabeled"][0][2])


@pytest.mark.parametrize("name", ["tin-dir", "tin-tar"])
def test_tiny_imagenet_round_trip(runs, name):
    source, out, expected = _succeeded(runs[name])
    meta = check_output(out, source, "tiny-imagenet", WNIDS, expected)
    assert meta["image_size"] == [8, 8]
    assert "test" not in meta["splits"]  # unlabelled: skipped


def test_nabirds_round_trip_with_size(runs):
    source, out, expected = _succeeded(runs["nabirds-dir"])
    meta = check_output(out, source, "nabirds", [BIRD_CLASSES[k] for k in sorted(BIRD_CLASSES)], expected)
    assert meta["image_size"] == [16, 16] and meta["resize"]["size"] == 16


def test_image_folder_with_wnids_is_still_image_folder(tmp_path):
    """The shared 32 px Tiny-ImageNet copy: wnids.txt beside train/<wnid>/*.JPEG."""
    root = tmp_path / "tiny-imagenet-200-32x32"
    (root / "wnids.txt").parent.mkdir(parents=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in WNIDS))
    for split in ("train", "test"):
        for n, wnid in enumerate(WNIDS):
            _write_jpeg(root / split / wnid / f"{n}.JPEG", n)
    source = read_source(tmp_path)
    assert source.kind == "imagefolder" and source.classes == WNIDS and list(source.splits) == ["train", "test"]


def _stl_bad_label(root: Path) -> tuple[Path, str]:
    make_stl10(root, train=2, test=1, unlabeled=1)
    (root / "train_y.bin").write_bytes(b"\x00\x01")
    return root, f"{root / 'train_y.bin'}: labels outside 1…10"


def _tin_unlabelled_val(root: Path) -> tuple[Path, str]:
    make_tiny_imagenet(root)
    _write_jpeg(root / "val" / "images" / "val_77.JPEG", 5)
    return root, f"{root / 'val' / 'images' / 'val_77.JPEG'}: no label in val/val_annotations.txt"


def _tin_unknown_wnid(root: Path) -> tuple[Path, str]:
    make_tiny_imagenet(root)
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    return root, f"{root / 'val' / 'val_annotations.txt'}: line 1: wnid 'n99999999' is not in wnids.txt"


def _nabirds_missing_image(root: Path) -> tuple[Path, str]:
    make_nabirds(root)
    (root / "images" / "0900" / "000193069d83.jpg").unlink()
    return root, f"{root / 'images.txt'}: line 3: images/0900/000193069d83.jpg not found"


def _nabirds_unnamed_class(root: Path) -> tuple[Path, str]:
    make_nabirds(root)
    (root / "classes.txt").write_text("5 Black-footed Albatross\n1000 Eared Grebe\n")
    return root, f"{root / 'classes.txt'}: no name for class id 295"


def _nabirds_bad_split_flag(root: Path) -> tuple[Path, str]:
    make_nabirds(root)
    (root / "train_test_split.txt").write_text("".join(f"{row[0]} 2\n" for row in NABIRDS_IMAGES))
    return root, f"{root / 'train_test_split.txt'}: line 1: '2' is not 0 or 1"


@pytest.mark.parametrize(
    "make",
    [_stl_bad_label, _tin_unlabelled_val, _tin_unknown_wnid, _nabirds_missing_image, _nabirds_unnamed_class,
     _nabirds_bad_split_flag],
)  # fmt: skip
def test_more_bad_files_name_the_file(tmp_path, make):
    """In-process (the process-level behaviour is the same as in test_bad_source_fails_cleanly)."""
    root, text = make(tmp_path / "src")
    with pytest.raises(SourceError) as error:
        read_source(root)
    assert text in str(error.value) and "\n" not in str(error.value)


BAD = [
    "stl-truncated",
    "stl-count",
    "tin-no-annotations",
    "nabirds-no-label",
    "unknown",
]


@pytest.mark.parametrize("name", BAD)
def test_bad_source_fails_cleanly(runs, name):
    source, out, text, (returncode, stdout, stderr) = runs[name]
    lines = stderr.splitlines()
    assert returncode == 2, stderr
    assert stdout == ""
    assert len(lines) == 1, stderr
    assert lines[0].startswith("convert.py: error: "), stderr
    assert text in lines[0], stderr
    assert list(out.parent.iterdir()) == []
