"""tools/show_views.py: draws every view of a recipe with the parameters the pipeline made it
with; bad input is one error line and status 2."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from fastssl.recipes import get
from pipelines.augment import CropParams, JitterParams, ViewParams
from pipelines.dataset import read_info
from pipelines.formats import open_split
from pipelines.views import ViewRecipe

ROOT = Path(__file__).resolve().parents[2]


def _load_tool():
    spec = importlib.util.spec_from_file_location("show_views_tool", ROOT / "tools" / "show_views.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


tool = _load_tool()
FAST = ["--images", "2", "--dpi", "30"]  # small figures: the tests check content, not looks


@pytest.mark.parametrize(
    "recipe, extra, views",
    [("mocov2", [], 2), ("byol", [], 2), ("dino", ["--local-crops", "3"], 5)],
)
def test_writes_the_recipes_views(tiny_dataset, tmp_path, capsys, recipe, extra, views):
    out = tmp_path / f"{recipe}.png"
    tool.main(["--recipe", recipe, "--data", str(tiny_dataset), "--out", str(out), *FAST, *extra])
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width == round(30 * tool.COLUMN * (1 + views))  # the source and every view, side by side
    assert height > round(30 * 2 * tool.ROW)  # two rows of tiles and their captions
    captured = capsys.readouterr()
    assert f"{views} views of 2 images" in captured.out and "warning" not in captured.err


def _source_batch(root: Path, count: int = 3):
    data = open_split(read_info(root), "train", torch.device("cpu"))
    index = torch.arange(count)
    return data.fetch(index), data.sizes[index]


def test_views_and_parameters_are_the_pipelines(tiny_dataset):
    # BYOL's asymmetric pair: the drawn pixels, boxes and flips are what the training
    # pipeline makes from the same seed, view by view.
    train = get("byol").preset(data=tiny_dataset)
    images, sizes = _source_batch(tiny_dataset)
    drawn = tool.make_views(train, images, sizes, seed=5)
    views, meta = ViewRecipe(train.view_groups())(images, sizes, torch.Generator().manual_seed(5))
    config = train.views
    mean, std = (torch.tensor(v)[None, :, None, None] for v in (config.mean, config.std))
    assert [(v.group, v.number, v.field) for v in drawn] == [("global", 1, "views"), ("global", 2, "second_views")]
    for k, view in enumerate(drawn):
        rows = slice(3 * k, 3 * (k + 1))
        torch.testing.assert_close(view.pixels, (views["global"][rows] * std + mean).clamp(0, 1))
        assert torch.equal(view.params.crop.boxes, meta["global"].boxes[rows])
        assert torch.equal(view.params.flip, meta["global"].flipped[rows])
    # The second view is solarised with p 0.2 and blurred with p 0.1: its own parameters.
    assert drawn[0].params.solarize.sum() == 0


def test_the_drawn_captions_are_the_views_parameters(tiny_dataset):
    train = get("dino").preset(data=tiny_dataset, local_crops=2)
    images, sizes = _source_batch(tiny_dataset, 2)
    views = tool.make_views(train, images, sizes, seed=0)
    assert [v.pixels.shape[-1] for v in views] == [32, 32, 16, 16]
    figure = tool.draw(images.float() / 255, sizes, views, ["a", "b"], "title", "footnote")
    texts = {text.get_text() for axes in figure.axes for text in axes.texts}
    for view in views:
        for r in range(2):
            assert tool.caption(view.params, r) in texts
    tool._pyplot().close(figure)


def _params(jitter_applied: bool, blur: float) -> ViewParams:
    return ViewParams(
        crop=CropParams(torch.tensor([[3, 5, 24, 20]])),
        flip=torch.tensor([True]),
        jitter=JitterParams(
            factors=torch.tensor([[1.234, 0.871, 1.1, -0.05]]),
            order=torch.tensor([[3, 0, 2, 1]]),
            applied=torch.tensor([jitter_applied]),
            enabled=torch.tensor([[True, True, False, True]]),  # saturation of strength 0
        ),
        grayscale=torch.tensor([False]),
        blur_sigma=torch.tensor([blur]),
        solarize=torch.tensor([True]),
    )


def test_caption_formats_a_views_parameters():
    assert tool.caption(_params(True, 1.337), 0) == (
        "crop (3, 5, 24, 20)\nflip yes · gray no\njitter b1.23 c0.87 h-0.05\nblur σ 1.34 · solarised yes"
    )
    assert tool.caption(_params(False, 0.0), 0) == (
        "crop (3, 5, 24, 20)\nflip yes · gray no\njitter none\nblur none · solarised yes"
    )


def test_views_larger_than_the_images_warn_once(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "views.png"
    # tiny-imagenet's 64 px views on 32 px images.
    tool.main(["--recipe", "mocov2", "--preset", "tiny-imagenet", "--data", str(tiny_dataset), "--out", str(out),
               "--images", "1", "--dpi", "20"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ["show_views.py: warning: views (global 64 px) larger than the stored 32×32 images: "
                        "they are upsampled"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--recipe", "nope"], "--recipe nope: no recipe 'nope'"),
        (["--preset", "nope"], "--preset nope: recipe 'mocov2' has no such preset"),
        (["--data", "{missing}"], "--data {missing}: not a converted data set"),
        (["--split", "val"], "--split val:"),
        (["--index", "64"], "--index 64: out of range"),
        (["--images", "0"], "--images 0"),
        (["--local-crops", "2"], "recipe 'mocov2' has no local crops"),
        (["--out", "{tmp}/views.jpg"], "must be a .png file"),
        (["--out", "{tmp}/no/such/dir/views.png"], "cannot write"),
    ],
)
def test_bad_input_fails_with_one_line(tiny_dataset, tmp_path, capsys, args, message):
    names = {"missing": tmp_path / "missing", "tmp": tmp_path}
    args = [a.format(**names) for a in args]
    full = ["--recipe", "mocov2", "--data", str(tiny_dataset), "--out", str(tmp_path / "views.png"), *FAST, *args]
    with pytest.raises(SystemExit) as exit_:
        tool.main(full)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("show_views.py: error: ") and "\n" not in err
    assert message.format(**names) in err
    assert not (tmp_path / "views.png").exists()
