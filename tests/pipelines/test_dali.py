"""What is particular to the ``dali`` backend: its files and file list, its stream in our
order, images of any size. The contract every backend keeps (order, labels, seed, resume,
the tensor backend's very batches: DALI's CPU decoder, libjpeg-turbo, gives PIL's pixels
exactly for these files) is tested in tests/pipelines/test_backends.py."""

import subprocess
import sys

import pytest

pytest.importorskip("nvidia.dali", reason="needs the [dali] extra")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pipelines.dataset import read_info  # noqa: E402
from pipelines.loader import Loader  # noqa: E402
from pipelines.spec import ViewConfig  # noqa: E402
from pipelines.views import two_views  # noqa: E402
from tests.pipelines.test_backends import ROOT, convert, write_image_folder  # noqa: E402

pytestmark = pytest.mark.dali
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The same 50 + 9 JPEG images of 32×32 as tensor and dali data sets."""
    root = tmp_path_factory.mktemp("dali")
    write_image_folder(root / "source", {"train": 50, "test": 9})
    return {fmt: convert(root / "source", root / fmt, fmt) for fmt in ("tensor", "dali")}


def test_conversion_keeps_the_files_and_writes_a_dali_file_list(converted, tmp_path):
    folder = converted["dali"] / "train"
    sources = (folder / "files.txt").read_text().split()
    lines = (folder / "file_list.txt").read_text().splitlines()
    labels = np.load(folder / "labels.npy")
    assert len(lines) == len(sources) == len(labels) == 50
    for line, source, label in zip(lines, sources, labels, strict=True):
        name, stored_label = line.split()
        assert int(stored_label) == label
        original = (converted["tensor"].parent / "source" / source).read_bytes()
        assert (folder / name).read_bytes() == original  # never re-encoded
    assert np.load(folder / "sizes.npy").tolist() == [[32, 32]] * 50


def test_stream_follows_the_given_order_and_matches_fetch(converted):
    from pipelines.formats.dali import DaliSplit
    from pipelines.formats.tensor import TensorSplit

    dali = DaliSplit(read_info(converted["dali"]), "train", CPU)
    tensor = TensorSplit(read_info(converted["tensor"]), "train", CPU)
    batches = [torch.tensor([49, 0, 17, 3]), torch.tensor([2, 2, 48]), torch.tensor([5, 4, 3, 2, 1])]
    for index, images in zip(batches, dali.stream(batches), strict=True):
        assert torch.equal(images, dali.fetch(index))
        assert torch.equal(images, tensor.fetch(index))


def test_images_of_any_size(tmp_path):
    sizes = ((40, 56), (64, 48), (32, 32))
    write_image_folder(tmp_path / "source", {"train": 12, "test": 3}, sizes)
    Image.new("RGB", (20, 30), (200, 10, 40)).save(tmp_path / "source" / "train" / "class0" / "png.png")
    path = convert(tmp_path / "source", tmp_path / "dali", "dali")
    data = Loader(path, two_views(ViewConfig(size=24)), 6, CPU)
    files = (path / "train" / "file_list.txt").read_text().split()[::2]
    for i, name in enumerate(files):  # each image, decoded alone and padded in a batch
        reference = np.asarray(Image.open(path / "train" / name).convert("RGB"))
        height, width = reference.shape[:2]
        assert data.train.sizes[i].tolist() == [height, width]
        padded = data.train.fetch(torch.tensor([i, (i + 1) % len(files)]))[0]
        assert torch.equal(padded[:, :height, :width], torch.from_numpy(reference.copy()).permute(2, 0, 1))
        assert not padded[:, height:].any() and not padded[:, :, width:].any()
    batch = next(iter(data))
    assert batch.views["global"].shape == (12, 3, 24, 24)
    boxes, source_sizes = batch.meta["global"].boxes, data.train.sizes[batch.indices.repeat(2)]
    assert ((boxes[:, 0] + boxes[:, 2] <= source_sizes[:, 0]) & (boxes[:, 1] + boxes[:, 3] <= source_sizes[:, 1])).all()
    assert [b.views["eval"].shape for b in data.eval_loader("test", 2)] == [(2, 3, 24, 24), (1, 3, 24, 24)]


def test_dali_format_refuses_what_it_cannot_keep(tmp_path):
    (tmp_path / "source" / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "source" / "train" / "a" / "x.bmp")
    for extra, expected in [([], "is not a JPEG or PNG file"), (["--size", "16"], "--size")]:
        command = [
            sys.executable,
            str(ROOT / "tools" / "convert.py"),
            str(tmp_path / "source"),
            str(tmp_path / "out"),
            "--format",
            "dali",
            *extra,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 2 and expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]
