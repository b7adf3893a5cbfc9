"""What is particular to the ffcv backend: its files, its stream, images of any size, JPEG
storage. The contract every backend keeps is tested in tests/pipelines/test_backends.py.
Needs the [ffcv] extra."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("ffcv", reason="needs the [ffcv] extra")

from pipelines.dataset import DatasetError, read_info  # noqa: E402
from pipelines.formats.ffcv import FfcvSplit  # noqa: E402
from pipelines.formats.tensor import TensorSplit  # noqa: E402
from pipelines.loader import Loader  # noqa: E402
from pipelines.spec import ViewConfig  # noqa: E402
from pipelines.views import two_views  # noqa: E402
from tests.pipelines.test_backends import ROOT, convert, write_image_folder  # noqa: E402

pytestmark = pytest.mark.ffcv
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The same 50 + 9 JPEG images of 32×32 as tensor and as ffcv."""
    root = tmp_path_factory.mktemp("ffcv")
    write_image_folder(root / "source", {"train": 50, "test": 9})
    return {fmt: convert(root / "source", root / fmt, fmt) for fmt in ("tensor", "ffcv")}


def test_conversion_writes_the_beton_and_its_host_arrays(converted):
    info = read_info(converted["ffcv"])
    assert info.format == "ffcv" and info.image_size == (32, 32)
    train = info.splits["train"]
    assert train["count"] == 50 and train["checked"] == 50 and train["ffcv"]["write_mode"] == "raw"
    folder = converted["ffcv"] / "train"
    assert set(train["sha256"]) == {"data.beton", "sizes.npy", "labels.npy", "indices.npy"}
    assert np.load(folder / "sizes.npy").tolist() == [[32, 32]] * 50
    assert not list(folder.glob(".*"))  # no temporary file left behind


def test_stream_and_fetch_give_the_stored_pixels_in_the_given_order(converted):
    ffcv = FfcvSplit(read_info(converted["ffcv"]), "train", CPU)
    tensor = TensorSplit(read_info(converted["tensor"]), "train", CPU)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    batches = [order[i : i + 16] for i in range(0, 50, 16)]  # the last one shorter
    for _ in range(2):  # the second pass reuses the compiled FFCV pipeline
        streamed = list(ffcv.stream(batches))
        assert [len(b) for b in streamed] == [16, 16, 16, 2]
        for index, pixels in zip(batches, streamed, strict=True):
            assert pixels.shape[1:] == (3, 32, 32) and torch.equal(pixels, tensor.fetch(index))
    repeated = torch.tensor([7, 0, 7, 49])
    assert torch.equal(ffcv.fetch(repeated), tensor.fetch(repeated))
    # batches of uneven sizes fall back to one fetch per batch
    uneven = [order[:5], order[5:20], order[20:21]]
    assert all(torch.equal(p, tensor.fetch(i)) for i, p in zip(uneven, ffcv.stream(uneven), strict=True))


def test_images_of_any_size_are_padded_per_batch(tmp_path):
    sizes = ((40, 56), (64, 48), (32, 32))
    write_image_folder(tmp_path / "source", {"train": 12, "test": 3}, sizes)
    path = convert(tmp_path / "source", tmp_path / "ffcv", "ffcv")
    split = FfcvSplit(read_info(path), "train", CPU)
    assert sorted({tuple(s) for s in split.sizes.tolist()}) == [(32, 32), (40, 56), (64, 48)]
    index = torch.tensor([0, 4, 8, 1])  # one of each size (images are sorted by class)
    batch_pixels = split.fetch(index)
    assert batch_pixels.shape == (4, 3, 64, 56)
    for row, i in zip(batch_pixels, index.tolist(), strict=True):
        height, width = split.sizes[i].tolist()
        assert row[:, height:].eq(0).all() and row[:, :, width:].eq(0).all()
    data = Loader(path, two_views(ViewConfig(size=24)), 6, CPU)
    batch = next(iter(data))
    assert batch.views["global"].shape == (12, 3, 24, 24)
    # raw storage keeps the decoded pixels of the source, exactly
    files = (path / "train" / "files.txt").read_text().split()
    for row, i in zip(batch_pixels, index.tolist(), strict=True):
        source = np.array(Image.open(tmp_path / "source" / files[i]).convert("RGB"))
        height, width = source.shape[:2]
        assert torch.equal(row[:, :height, :width], torch.from_numpy(source).permute(2, 0, 1))


def test_a_split_that_disagrees_with_its_beton_is_refused(converted, tmp_path):
    import shutil

    copy = Path(shutil.copytree(converted["ffcv"], tmp_path / "copy"))
    np.save(copy / "train" / "sizes.npy", np.full((50, 2), 31, dtype=np.int64))
    with pytest.raises(DatasetError, match="sizes.npy disagrees"):
        FfcvSplit(read_info(copy), "train", CPU)
    (copy / "train" / "data.beton").write_bytes(b"not a beton")
    with pytest.raises(DatasetError, match="unreadable split"):
        FfcvSplit(read_info(copy), "train", CPU)


def test_jpg_write_mode_round_trips_within_its_tolerance(tmp_path):
    write_image_folder(tmp_path / "source", {"train": 6, "test": 2}, ((40, 56), (32, 32)))
    path = convert(tmp_path / "source", tmp_path / "ffcv", "ffcv", "--ffcv-write-mode", "jpg", "--jpeg-quality", "80")
    info = read_info(path)
    assert info.splits["train"]["ffcv"] == {"write_mode": "jpg", "jpeg_quality": 80, "max_resolution": None}
    assert info.splits["train"]["checked"] == 6 and info.image_size == (40, 56)
    pixels = FfcvSplit(info, "train", CPU).fetch(torch.arange(6))
    files = (path / "train" / "files.txt").read_text().split()
    for row, name in zip(pixels, files, strict=True):
        source = torch.from_numpy(np.array(Image.open(tmp_path / "source" / name).convert("RGB"))).permute(2, 0, 1)
        height, width = source.shape[1:]
        error = (row[:, :height, :width].float() - source.float()).abs().mean()
        assert 0 < error < 8  # lossy, but close


def test_max_resolution_caps_the_longer_side(tmp_path):
    write_image_folder(tmp_path / "source", {"train": 4, "test": 2}, ((40, 56), (64, 48)))
    path = convert(tmp_path / "source", tmp_path / "ffcv", "ffcv", "--max-resolution", "32")
    split = FfcvSplit(read_info(path), "train", CPU)
    assert sorted({tuple(s) for s in split.sizes.tolist()}) == [(23, 32), (32, 24)]
    assert read_info(path).splits["train"]["checked"] == 4  # exact against the same resize


def test_ffcv_options_are_refused_for_other_formats(tmp_path):
    write_image_folder(tmp_path / "source", {"train": 4, "test": 2})
    command = [sys.executable, str(ROOT / "tools" / "convert.py"), str(tmp_path / "source"), str(tmp_path / "out"),
               "--max-resolution", "16"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and "--format ffcv only" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
