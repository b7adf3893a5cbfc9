"""tools/convert.py on real-world folders: every unreadable file listed (or skipped with
``--skip-bad``), the pixel policy of ``conversion/decode.py`` (16-bit, alpha, palette,
CMYK, refused modes) checked against values computed here from its stated formulas,
leftover files and duplicates reported, and a full disk ending in one line with nothing
left behind.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "convert.py"
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).parent))
from test_convert import make_image_folder, tool, write_image  # noqa: E402

HEIGHT, WIDTH = 2, 6  # every policy image: one size, so one tensor data set holds them all


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """tools/convert.py in-process: (exit status, stdout, stderr)."""
    try:
        tool.main([*map(str, args), "--workers", "2"])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def start_process(*args: str | Path, prelude: str = "") -> subprocess.Popen:
    """tools/convert.py as a real process; ``prelude`` runs first in it (to fake a value)."""
    code = f"{prelude}\nimport runpy, sys\nsys.argv = {[str(SCRIPT), *map(str, args), '--workers', '2']!r}\n"
    code += f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_nothing_left(parent: Path, before: list[str]) -> None:
    assert sorted(p.name for p in parent.iterdir()) == before


# --- unreadable files ------------------------------------------------------------------

BAD = ["train/cat/bad0.jpg", "train/dog/bad1.jpg", "train/frog/bad2.jpg"]


def make_with_bad_jpegs(root: Path) -> None:
    """A JPEG ImageFolder with three bad files: garbage after the magic, a JPEG cut short
    (its header intact), an empty file."""
    make_image_folder(root, per_class={"train": 2, "test": 1}, suffix=".jpg")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / BAD[0]).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    (root / BAD[1]).write_bytes(buffer.getvalue()[:400])
    (root / BAD[2]).write_bytes(b"")


def test_every_unreadable_file_is_listed(tmp_path):
    """Both formats at once, as real processes (each imports torch: seconds of CPU)."""
    source = tmp_path / "src"
    make_with_bad_jpegs(source)
    running = {}
    for fmt in ("tensor", "jpeg"):
        (tmp_path / fmt).mkdir()
        running[fmt] = start_process(source, tmp_path / fmt / "out", "--format", fmt)
    for fmt, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        lines = stderr.splitlines()
        assert process.returncode == 2, stderr
        assert stdout == ""
        assert lines[0].startswith(f"convert.py: error: {source}: 3 unreadable images (first: {BAD[0]}: "), lines
        assert "all listed below" in lines[0]
        assert [line.split(":")[0] for line in lines[1:]] == [f"  {path}" for path in BAD], lines
        assert "Traceback" not in stderr
        assert_nothing_left(tmp_path / fmt, [])


def test_unreadable_files_of_every_split_are_listed_together(tmp_path, capsys):
    source = tmp_path / "src"
    make_image_folder(source, per_class={"train": 2, "test": 1})
    (source / "train/cat/000.png").write_bytes(b"not a png")
    (source / "test/dog/000.png").write_bytes(b"")
    code, stdout, stderr = run_main(capsys, source, tmp_path / "out")
    lines = stderr.splitlines()
    assert code == 2 and stdout == ""
    assert lines[0].startswith(f"convert.py: error: {source}: 2 unreadable images (first: train/cat/000.png: ")
    assert [line.split(":")[0] for line in lines[1:]] == ["  train/cat/000.png", "  test/dog/000.png"]
    assert_nothing_left(tmp_path, ["src"])


@pytest.mark.parametrize("fmt", ["tensor", "jpeg"])
def test_skip_bad_converts_the_rest(tmp_path, capsys, fmt):
    source, out = tmp_path / "src", tmp_path / "out"
    make_with_bad_jpegs(source)
    code, stdout, stderr = run_main(capsys, source, out, "--format", fmt, "--skip-bad")
    assert code == 0, stderr
    assert "train 6, test 3 images" in stdout and "skipped 3 unreadable images (listed in meta.json)" in stdout
    meta = json.loads((out / "meta.json").read_text())
    assert [(item["split"], item["path"]) for item in meta["skipped"]] == [("train", path) for path in BAD]
    assert all(item["reason"] for item in meta["skipped"])
    every = sorted(p.relative_to(source).as_posix() for p in (source / "train").glob("*/*"))
    good = [path for path in every if path not in BAD]
    assert (out / "train" / "files.txt").read_text().splitlines() == good
    labels = np.load(out / "train" / "labels.npy").tolist()
    assert labels == [["cat", "dog", "frog"].index(path.split("/")[1]) for path in good]
    assert np.load(out / "train" / "indices.npy").tolist() == list(range(6))
    if fmt == "tensor":
        stored = np.load(out / "train" / "images.npy")  # no holes: row i is file i
        expected = np.stack([np.asarray(Image.open(source / path).convert("RGB")) for path in good])
        np.testing.assert_array_equal(stored, expected)
        assert os.path.getsize(out / "train" / "images.npy") == 128 + expected.nbytes
    else:
        offsets = np.load(out / "train" / "offsets.npy")
        assert offsets[-1] == sum((source / path).stat().st_size for path in good)


# --- the pixel policy -------------------------------------------------------------------


def to_8_bit(value: int) -> int:
    """round(v·255/65535), computed exactly (it is never a half)."""
    return int(Fraction(value * 255, 65535) + Fraction(1, 2))


def composite(alpha: np.ndarray, colour: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """round(a·c + (1 − a)·bg) with a = alpha/255, computed exactly per pixel."""
    out = np.empty((*alpha.shape, 3), dtype=np.uint8)
    for index in np.ndindex(*alpha.shape):
        a = Fraction(int(alpha[index]), 255)
        for channel in range(3):
            c = int(colour[index][channel]) if colour.ndim == 3 else int(colour[index])
            out[index][channel] = int(a * c + (1 - a) * background[channel] + Fraction(1, 2))
    return out


def cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """PIL's formula as stated: R = (255 − K) − round(C·(255 − K)/255), and so on."""
    rest = 255 - cmyk[..., 3:].astype(np.int64)
    scaled = np.vectorize(lambda x: int(Fraction(int(x), 255) + Fraction(1, 2)))(cmyk[..., :3] * rest)
    return (rest - scaled).astype(np.uint8)


def png_16_bit(values: np.ndarray) -> bytes:
    """A 16-bit PNG (gray for H×W, RGB for H×W×3), written by hand: PIL cannot write RGB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    colour_type = 0 if values.ndim == 2 else 2
    header = struct.pack(">IIBBBBB", values.shape[1], values.shape[0], 16, colour_type, 0, 0, 0)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


SIXTEEN = np.array([[0, 128, 129, 257, 32768, 65535], [1, 255, 256, 32767, 65280, 65534]], dtype=np.uint16)
ALPHA = np.array([[0, 1, 127, 128, 254, 255], [64, 200, 255, 0, 33, 99]], dtype=np.uint8)


def make_policy_images(root: Path) -> dict[str, object]:
    """train/<kind>/x.<ext>, every image HEIGHT×WIDTH; returns what each one is built from."""
    rng = np.random.default_rng(7)
    colour = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
    cmyk = rng.integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8)
    rgb16 = np.stack([SIXTEEN, SIXTEEN[::-1], SIXTEEN[:, ::-1]], axis=2)
    folder = root / "train"
    for name in ("gray16", "rgb16", "rgba", "la", "palette", "cmyk_tiff", "cmyk_jpeg"):
        (folder / name).mkdir(parents=True)
    (folder / "gray16" / "x.png").write_bytes(png_16_bit(SIXTEEN))
    (folder / "rgb16" / "x.png").write_bytes(png_16_bit(rgb16))
    Image.fromarray(np.dstack([colour, ALPHA]), mode="RGBA").save(folder / "rgba" / "x.png")
    Image.fromarray(np.dstack([gray, ALPHA]), mode="LA").save(folder / "la" / "x.png")
    indices = np.arange(HEIGHT * WIDTH, dtype=np.uint8).reshape(HEIGHT, WIDTH)  # pixel i: palette entry i
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette(colour.reshape(-1).tolist())
    palette.save(folder / "palette" / "x.png", transparency=ALPHA.reshape(-1).tobytes())
    Image.fromarray(cmyk, mode="CMYK").save(folder / "cmyk_tiff" / "x.tiff")
    Image.fromarray(cmyk, mode="CMYK").save(folder / "cmyk_jpeg" / "x.jpg", quality=95)
    return {"colour": colour, "gray": gray, "cmyk": cmyk, "rgb16": rgb16}


@pytest.mark.parametrize("background", ["white", "0,0,0"])
def test_pixel_policy_exact_values(tmp_path, capsys, background):
    source, out = tmp_path / "src", tmp_path / "out"
    parts = make_policy_images(source)
    code, stdout, stderr = run_main(capsys, source, out, "--alpha-background", background)
    assert code == 0, stderr
    bg = (255, 255, 255) if background == "white" else (0, 0, 0)
    files = (out / "train" / "files.txt").read_text().splitlines()
    stored = dict(zip([f.split("/")[-2] for f in files], np.load(out / "train" / "images.npy"), strict=True))
    eight = np.vectorize(to_8_bit)
    np.testing.assert_array_equal(stored["gray16"], np.repeat(eight(SIXTEEN)[:, :, None], 3, axis=2))
    assert eight(SIXTEEN)[0].tolist() == [0, 0, 1, 1, 128, 255]
    np.testing.assert_array_equal(stored["rgb16"], eight(parts["rgb16"]))
    colour, gray = parts["colour"], parts["gray"]
    np.testing.assert_array_equal(stored["rgba"], composite(ALPHA, colour, bg))
    np.testing.assert_array_equal(stored["la"], composite(ALPHA, gray, bg))
    np.testing.assert_array_equal(stored["palette"], composite(ALPHA, colour, bg))
    np.testing.assert_array_equal(stored["cmyk_tiff"], cmyk_to_rgb(parts["cmyk"]))
    decoded_cmyk = np.asarray(Image.open(source / "train/cmyk_jpeg/x.jpg"))  # lossy: what PIL reads
    np.testing.assert_array_equal(stored["cmyk_jpeg"], cmyk_to_rgb(decoded_cmyk))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["decoded"] == {"16-bit": 2, "alpha_composited": 3, "palette": 1, "cmyk": 2, "grayscale": 2}
    assert f"decoded 2 16-bit, 3 alpha-composited on {background}, 1 palette, 2 CMYK, 2 grayscale" in stdout


def test_refused_mode_is_named(tmp_path, capsys):
    source, parent = tmp_path / "src", tmp_path / "outs"
    make_image_folder(source, per_class={"train": 1, "test": 1})
    parent.mkdir()
    Image.fromarray(np.full((10, 12), 0.5, dtype=np.float32)).save(source / "train" / "cat" / "float.tiff")
    code, stdout, stderr = run_main(capsys, source, parent / "out")
    assert code == 2 and stdout == ""
    assert stderr.splitlines() == [
        f"convert.py: error: {source}: train/cat/float.tiff: mode F (32-bit float) is not supported; "
        "--skip-bad converts the rest"
    ]
    assert_nothing_left(parent, [])


def test_bad_alpha_background_is_refused(tmp_path, capsys):
    source = tmp_path / "src"
    make_image_folder(source, per_class={"train": 1, "test": 1})
    code, _, stderr = run_main(capsys, source, tmp_path / "out", "--alpha-background", "1,2,300")
    assert code == 2 and "--alpha-background 1,2,300: each of R,G,B must be 0 to 255" in stderr


# --- leftovers and duplicates -------------------------------------------------------------


def test_leftovers_and_duplicates_are_reported(tmp_path, capsys):
    source, out = tmp_path / "src", tmp_path / "out"
    make_image_folder(source, per_class={"train": 2, "test": 1})
    (source / "train" / "cat" / "notes.txt").write_text("not an image")
    (source / "train" / "bird").mkdir()
    shutil.copy(source / "train" / "dog" / "001.png", source / "test" / "dog" / "copy.png")
    code, stdout, stderr = run_main(capsys, source, out)
    assert code == 0, stderr
    assert stderr.splitlines() == [
        f"convert.py: warning: {source}: ignored 1 file that are not images in a class folder "
        "(train/cat/notes.txt); class folder train/bird/ has no images"
    ]
    assert "1 held-out image also in another split (test/dog/copy.png = train/dog/001.png)" in stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["duplicates"] == [{"held_out": "test/dog/copy.png", "also": "train/dog/001.png"}]
    assert meta["ignored_files"] == ["train/cat/notes.txt"] and meta["empty_class_folders"] == ["train/bird/"]


# --- disk space ----------------------------------------------------------------------------


def test_free_space_is_checked_first(tmp_path, capsys, monkeypatch):
    source, parent = tmp_path / "src", tmp_path / "outs"
    make_image_folder(source)
    parent.mkdir()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**6, 10**6 - 1000, 1000))
    code, stdout, stderr = run_main(capsys, source, parent / "out" / "data")
    assert code == 2 and stdout == ""
    (line,) = stderr.splitlines()
    assert line.startswith(f"convert.py: error: {parent / 'out' / 'data'}: not enough free space on ")
    assert "(needed about 1.0 MiB, free 1000 B)" in line
    assert_nothing_left(parent, [])


def test_full_disk_at_allocation_is_one_line(tmp_path, capsys, monkeypatch):
    source, parent = tmp_path / "src", tmp_path / "outs"
    make_image_folder(source)
    parent.mkdir()

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    code, stdout, stderr = run_main(capsys, source, parent / "out")
    assert code == 2 and stdout == ""
    (line,) = stderr.splitlines()
    assert line.startswith(f"convert.py: error: {parent / 'out'}: the disk is full ("), line
    assert_nothing_left(parent, [])


@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MiB tmpfs (root on Linux), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_real_full_disk(tmp_path, small_filesystem):
    """3 MiB of pixels into 2 MiB: refused up front; with the up-front check fooled, the
    allocation fails. Either way one line, exit 2, nothing left, no worker traceback."""
    source = tmp_path / "src"
    for n in range(12):  # 12 × 256×340×3 ≈ 3 MiB
        write_image(source / "train" / ["cat", "dog"][n % 2] / f"{n}.png", n, width=340, height=256)
    fooled = "import shutil; shutil.disk_usage = lambda path: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40)"
    for prelude, text in (("", "not enough free space on"), (fooled, "the disk is full")):
        process = start_process(source, small_filesystem / "out", prelude=prelude)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 2, stderr
        (line,) = stderr.splitlines()
        assert line.startswith(f"convert.py: error: {small_filesystem / 'out'}: {text}"), line
        assert list(small_filesystem.iterdir()) == []
