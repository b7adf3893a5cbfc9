"""tools/show_views.py: writes the grid PNG; bad input is one error line and status 2."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipelines.tensor import write_split  # noqa: E402


def _load_tool():
    spec = importlib.util.spec_from_file_location("show_views_tool", ROOT / "tools" / "show_views.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


tool = _load_tool()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A converted data set (the layout tools/convert.py writes) of 5 images of 32×32."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(5) % 2
    split = write_split(root / "train", images, labels, [f"train/{i}.png" for i in range(5)])
    meta = {
        "format": "tensor",
        "version": 1,
        "source": "synthetic",
        "classes": ["a", "b"],
        "image_size": [32, 32],
        "splits": {"train": split},
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_writes_the_grid(dataset, tmp_path, capsys):
    out = tmp_path / "views.png"
    tool.main(["--data", str(dataset), "--index", "4", "--views", "8", "--out", str(out), "--zoom", "2"])
    tile, padding = 32 * 2, 2
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (9 * (tile + padding) + padding, tile + 2 * padding)  # source + 8 views
        pixels = np.asarray(image.convert("RGB"))
    # The source tile is the image enlarged by nearest-neighbour sampling.
    source = np.load(dataset / "train" / "images.npy")[4]
    shown = pixels[padding : padding + tile, padding : padding + tile]
    assert np.array_equal(shown, source.repeat(2, axis=0).repeat(2, axis=1))
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{missing}"], "not a converted data set"),
        (["--index", "5"], "--index 5: out of range"),
        (["--index", "-1"], "--index -1: out of range"),
        (["--views", "0"], "--views 0"),
        (["--split", "test"], "no split 'test'"),
        (["--out", "{tmp}/no/such/dir/views.png"], "cannot write"),
    ],
)
def test_bad_input_fails_with_one_line(dataset, tmp_path, capsys, args, message):
    args = [a.format(missing=tmp_path / "missing", tmp=tmp_path) for a in args]
    full = ["--data", str(dataset), "--out", str(tmp_path / "views.png"), *args]
    with pytest.raises(SystemExit) as exit_:
        tool.main(full)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("show_views.py: error: ") and "\n" not in err
    assert message in err
