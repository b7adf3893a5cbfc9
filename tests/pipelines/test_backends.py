"""One contract for every backend: coverage, labels, seed, resume, sharding — and every
backend gives the very same batches as the tensor one. The ffcv and dali backends take part
when their extras are installed (markers ``ffcv``, ``dali``)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.dataset import DatasetError, read_info
from pipelines.formats.tensor import TensorSplit
from pipelines.loader import Loader
from pipelines.spec import ViewConfig
from pipelines.views import two_views

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


def optional(name: str, module: str, mark: pytest.MarkDecorator):
    installed = importlib.util.find_spec(module) is not None
    return pytest.param(name, marks=[mark, pytest.mark.skipif(not installed, reason=f"needs the [{name}] extra")])


BACKENDS = [
    "tensor", "jpeg", optional("ffcv", "ffcv", pytest.mark.ffcv), optional("dali", "nvidia.dali", pytest.mark.dali),
]


def write_image_folder(root: Path, per_class: dict[str, int], sizes=((32, 32),)) -> None:
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for i in range(count):
            label = f"class{i % 3}"
            height, width = sizes[i % len(sizes)]
            smooth = rng.integers(0, 255, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
            image = Image.fromarray(smooth).resize((width, height), Image.Resampling.BILINEAR)
            (root / split / label).mkdir(parents=True, exist_ok=True)
            image.save(root / split / label / f"{i:03d}.jpg", quality=90)


def convert(source: Path, out: Path, fmt: str, *options: str) -> Path:
    command = [sys.executable, str(ROOT / "tools" / "convert.py"), str(source), str(out), "--format", fmt,
               "--workers", "1", *options]
    subprocess.run(command, check=True, capture_output=True)
    return out


class Converted(dict):
    """The same source images in each format, converted when a test first asks for it."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, fmt: str) -> Path:
        self[fmt] = convert(self.root / "source", self.root / fmt, fmt)
        return self[fmt]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The same 50 + 9 JPEG images of 32×32 in every format."""
    root = tmp_path_factory.mktemp("backends")
    write_image_folder(root / "source", {"train": 50, "test": 9})
    return Converted(root)


def loader(path, seed=0, batch=16, rank=0, world=1):
    return Loader(path, two_views(ViewConfig()), batch, CPU, seed=seed, rank=rank, world=world)


def source_labels(path: Path) -> list[int]:
    return [int(line.split("/")[1][-1]) for line in (path / "train" / "files.txt").read_text().split()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_epoch_covers_every_image_once_with_its_label(converted, backend):
    data = loader(converted[backend])
    assert len(data) == 50 // 16  # drop_last: the last 2 images wait for another epoch
    seen, labels = [], source_labels(converted[backend])
    for batch in data:
        assert batch.views["global"].shape == (32, 3, 32, 32)
        seen += batch.indices.tolist()
        assert batch.labels.tolist() == [labels[i] for i in batch.indices.tolist()]
    assert len(seen) == len(set(seen)) == 48
    data.set_epoch(1)
    assert [b.indices.tolist() for b in data] != [b.indices.tolist() for b in loader(converted[backend])]


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_every_backend_yields_the_tensor_backends_batches(converted, backend):
    for seed in (5, 6):
        tensor, other = loader(converted["tensor"], seed=seed), loader(converted[backend], seed=seed)
        for epoch in (0, 1):
            tensor.set_epoch(epoch)
            other.set_epoch(epoch)
            for a, b in zip(tensor, other, strict=True):
                assert torch.equal(a.indices, b.indices) and torch.equal(a.labels, b.labels)
                torch.testing.assert_close(a.views["global"], b.views["global"], rtol=0, atol=0)
                torch.testing.assert_close(a.meta["global"].boxes, b.meta["global"].boxes)
    assert [b.indices.tolist() for b in loader(converted[backend], seed=6)] != [
        b.indices.tolist() for b in loader(converted[backend], seed=5)
    ]
    tensor_eval = list(loader(converted["tensor"]).eval_loader("test", 4))
    other_eval = list(loader(converted[backend]).eval_loader("test", 4))
    for a, b in zip(tensor_eval, other_eval, strict=True):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.views["eval"], b.views["eval"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_mid_epoch_gives_the_same_batches(converted, backend):
    straight = list(loader(converted[backend], seed=1))
    first = loader(converted[backend], seed=1)
    next(iter(first))  # abandons an epoch mid-way (FFCV's and DALI's own pipelines too)
    state = first.state_dict()
    resumed = loader(converted[backend], seed=1)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(straight) - 1
    for a, b in zip(straight[1:], rest, strict=True):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.views["global"], b.views["global"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ranks_share_out_the_single_process_batch(converted, backend):
    single = next(iter(loader(converted[backend], seed=2)))
    parts = [next(iter(loader(converted[backend], seed=2, rank=r, world=2))) for r in range(2)]
    assert torch.equal(torch.cat([p.indices for p in parts]), single.indices)
    for view in range(2):
        expected = single.views["global"][view * 16 : (view + 1) * 16]
        got = torch.cat([p.views["global"][view * 8 : (view + 1) * 8] for p in parts])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_jpeg_backend_takes_images_of_any_size(tmp_path):
    sizes = ((40, 56), (64, 48), (32, 32))
    write_image_folder(tmp_path / "source", {"train": 12, "test": 3}, sizes)
    path = convert(tmp_path / "source", tmp_path / "jpeg", "jpeg")
    data = Loader(path, two_views(ViewConfig(size=24)), 6, CPU)
    batch = next(iter(data))
    assert batch.views["global"].shape == (12, 3, 24, 24)
    boxes, chosen = batch.meta["global"].boxes, batch.indices.repeat(2)
    source_sizes = data.train.sizes[chosen]
    assert ((boxes[:, 0] + boxes[:, 2] <= source_sizes[:, 0]) & (boxes[:, 1] + boxes[:, 3] <= source_sizes[:, 1])).all()
    evaluated = list(data.eval_loader("test", 2))
    assert [b.views["eval"].shape for b in evaluated] == [(2, 3, 24, 24), (1, 3, 24, 24)]


def test_jpeg_format_refuses_what_it_cannot_keep(tmp_path):
    (tmp_path / "source" / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "source" / "train" / "a" / "x.png")
    for extra, expected in [([], "is not a JPEG file"), (["--size", "16"], "--size")]:
        command = [sys.executable, str(ROOT / "tools" / "convert.py"), str(tmp_path / "source"),
                   str(tmp_path / "out"), "--format", "jpeg", *extra]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 2 and expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]


def test_tensor_split_from_host_memory_matches_the_resident_one(converted):
    from pipelines.dataset import read_info
    from pipelines.formats.tensor import TensorSplit

    info = read_info(converted["tensor"])
    resident, host = TensorSplit(info, "train", CPU, resident=True), TensorSplit(info, "train", CPU, resident=False)
    index = torch.tensor([7, 0, 31, 7])
    assert torch.equal(resident.fetch(index), host.fetch(index))


def test_a_missing_optional_backend_names_its_extra(monkeypatch):
    import importlib

    from pipelines import formats
    from pipelines.dataset import DatasetError

    real_import = importlib.import_module

    def without_ffcv(name, *args):
        if name == "pipelines.formats.ffcv":
            raise ModuleNotFoundError("No module named 'ffcv'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_ffcv)
    with pytest.raises(DatasetError, match=r"the ffcv format needs the \[ffcv\] extra: pip install -e '\.\[ffcv\]'"):
        formats.format_named("ffcv")
    with pytest.raises(DatasetError, match="unknown format 'zarr'"):
        formats.format_named("zarr")


def test_training_on_several_splits_concatenates_them(converted):
    both = Loader(converted["tensor"], two_views(ViewConfig()), 16, CPU, seed=3, splits=("train", "test"))
    assert len(both.train) == 59 and len(both) == 59 // 16
    indices = torch.cat([b.indices for b in both])
    assert len(set(indices.tolist())) == len(indices) == 48 and indices.max() < 59
    train, test = (TensorSplit(read_info(converted["tensor"]), split, CPU) for split in ("train", "test"))
    index = torch.tensor([0, 55, 3, 50])  # train, test, train, test
    expected = torch.stack([train.fetch(index[:1])[0], test.fetch(torch.tensor([5]))[0],
                            train.fetch(index[2:3])[0], test.fetch(torch.tensor([0]))[0]])
    assert torch.equal(both.train.fetch(index), expected)
    assert both.train.labels[55] == test.labels[5]
    with pytest.raises(DatasetError, match="no split 'unlabeled'"):
        Loader(converted["tensor"], two_views(ViewConfig()), 16, CPU, splits=("train", "unlabeled"))
