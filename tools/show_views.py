"""Write a PNG grid of one image of a converted data set and views of it.

    python tools/show_views.py --data data/cifar10 --index 0 --views 8 --out views.png

The first tile is the source image, the others are views made by
``pipelines.views.two_views(ViewConfig())`` (the MoCo v2 / SimCLR CIFAR recipe),
un-normalised for display. Tiles are enlarged with nearest-neighbour sampling so that
32-pixel images stay visible.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

# The repository root replaces this script's folder on the path: tools/profile.py would
# otherwise shadow the standard library's ``profile`` module (imported by torch).
sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.utils import save_image  # noqa: E402

from fastssl.cli import fail, parse  # noqa: E402
from pipelines.dataset import DatasetError, read_info  # noqa: E402
from pipelines.loader import open_split  # noqa: E402
from pipelines.spec import ViewConfig  # noqa: E402
from pipelines.views import two_views  # noqa: E402

PROGRAM = "show_views.py"


@dataclass(frozen=True)
class ShowConfig:
    data: Path = Path("data/cifar10")  # converted data set directory (tools/convert.py)
    index: int = 0  # image of the split to show
    views: int = 8  # number of views
    out: Path = Path("views.png")  # PNG file to write
    split: str = "train"  # split the image comes from
    seed: int = 0  # seed of the views' random generator
    zoom: int = 4  # tile size in multiples of the view size (nearest-neighbour)


def make_views(image: np.ndarray, count: int, seed: int, config: ViewConfig) -> torch.Tensor:
    """``count`` views of one H×W×3 uint8 image, un-normalised: count×3×s×s in [0, 1]."""
    pairs = -(-count // 2)
    source = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a copy of the memory map
    images = source.expand(pairs, -1, -1, -1)
    sizes = torch.tensor([list(image.shape[:2])]).expand(pairs, 2)
    views, _ = two_views(config)(images, sizes, torch.Generator().manual_seed(seed))
    mean = torch.tensor(config.mean)[None, :, None, None]
    std = torch.tensor(config.std)[None, :, None, None]
    return (views["global"][:count] * std + mean).clamp(0, 1)


def grid_tiles(image: np.ndarray, views: torch.Tensor, zoom: int) -> torch.Tensor:
    """The source image and the views as equal (1+V)×3×T×T tiles, T = zoom × view size."""
    tile = views.shape[-1] * zoom
    source = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    if max(source.shape[-2:]) > tile:  # a large source: shrink it smoothly to one tile
        source = F.interpolate(source, size=(tile, tile), mode="bilinear", antialias=True)
    source = F.interpolate(source, size=(tile, tile), mode="nearest")
    return torch.cat([source, F.interpolate(views, scale_factor=zoom, mode="nearest")])


def show(cfg: ShowConfig) -> None:
    if cfg.views < 1:
        fail(PROGRAM, f"--views {cfg.views}: must be at least 1")
    if cfg.zoom < 1:
        fail(PROGRAM, f"--zoom {cfg.zoom}: must be at least 1")
    if cfg.out.suffix.lower() != ".png":
        fail(PROGRAM, f"--out {cfg.out}: must be a .png file")
    try:
        data = open_split(read_info(cfg.data), cfg.split, torch.device("cpu"))
    except DatasetError as error:
        fail(PROGRAM, error)
    if not 0 <= cfg.index < len(data):
        fail(PROGRAM, f"--index {cfg.index}: out of range, split '{cfg.split}' has {len(data)} images")
    height, width = data.sizes[cfg.index].tolist()
    image = data.fetch(torch.tensor([cfg.index]))[0, :, :height, :width].permute(1, 2, 0).numpy()
    views = make_views(image, cfg.views, cfg.seed, ViewConfig())
    tiles = grid_tiles(image, views, cfg.zoom)
    try:
        save_image(tiles, cfg.out, nrow=min(len(tiles), 9), padding=2, pad_value=1.0, format="png")
    except (OSError, ValueError) as error:
        fail(PROGRAM, f"{cfg.out}: cannot write ({error})")
    print(f"{cfg.out}: {cfg.split}[{cfg.index}] of {cfg.data} and {cfg.views} views")


def main(args: list[str] | None = None) -> None:
    show(parse(ShowConfig, ShowConfig(), args, PROGRAM))


if __name__ == "__main__":
    main()
