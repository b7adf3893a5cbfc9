"""Draw the views a recipe trains on, for a few images of a converted data set, as a PNG.

    python tools/show_views.py --recipe byol --data data/cifar10 --out byol.png
    python tools/show_views.py --recipe dino --local-crops 6 --data data/cifar10 --out dino.png
    python tools/show_views.py --recipe vicregl --preset imagenette-224 --data data/imagenette
    python tools/show_views.py --recipe byol --data data/cifar10 --views.local-rotation-p 1 --out lorot.png

Needs matplotlib (the [report] extra). One row per source image: the source first (black
frame, each view's crop box drawn on it in that view's colour), then every view of every
view group of the recipe's preset (``TrainConfig.view_groups()``: asymmetric pairs, weak
teacher views, multi-crop local crops), un-normalised for display. Under each view, the
parameters the pipeline drew for it and made its pixels with: crop box, flip, colour
jitter factors, grayscale, blur σ, solarisation, and the geometric ops it drew (vertical
flip, rotation by 90°, LoRot-I's quadrant and angle, region confusion), if any.

Options with a dot change the preset's views as the recipe's own command line does
(``--views.region-confusion-p 1``, ``--second-views.blur-p 0``, ``--local-views.vflip-p 0.5``),
so any view setting, the geometric ops of ``pipelines/geometry.py`` included, can be drawn.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The repository root replaces this script's folder on the path: tools/profile.py would
# otherwise shadow the standard library's ``profile`` module (imported by torch).
sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402

from fastssl.cli import fail, parse  # noqa: E402
from fastssl.config import ConfigError, LocalCropsTrainConfig, TrainConfig, validate, view_fields  # noqa: E402
from fastssl.recipes import UnknownRecipe, get  # noqa: E402
from fastssl.train.checkpoint import write_atomic  # noqa: E402
from pipelines.augment import BRIGHTNESS, CONTRAST, HUE, SATURATION, ViewParams  # noqa: E402
from pipelines.dataset import DatasetError, DatasetInfo, read_info  # noqa: E402
from pipelines.formats import open_split  # noqa: E402
from pipelines.geometry import QUADRANTS  # noqa: E402
from pipelines.views import ViewRecipe  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PROGRAM = "show_views.py"
SOURCE_COLOUR = "black"
# tab10 without its grey, which reads as the source's black frame
VIEW_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                "tab:olive", "tab:cyan")
# Figure geometry in inches: a tile, the column it sits in (wide enough for the longest
# caption line), the title line above it and the caption lines below it.
TILE, COLUMN, HEADER, CAPTION = 1.6, 2.0, 0.28, 0.78
ROW = HEADER + TILE + CAPTION


@dataclass(frozen=True)
class ShowConfig:
    recipe: str  # recipe name (fastssl/methods/<name>.py), e.g. mocov2, byol, dino, vicregl
    data: Path  # converted data set directory (tools/convert.py)
    preset: str | None = None  # the recipe's preset (default: its first, cifar10)
    out: Path = Path("views.png")  # PNG file to write
    images: int = 4  # source images, one row each
    index: tuple[int, ...] = ()  # which images of the split (default: --images of them drawn with --seed)
    seed: int = 0  # seed of the choice of images and of the views' random generator
    split: str = "train"  # split the images come from
    local_crops: int | None = None  # multi-crop recipes (dino, swav): local crops per image (default: the preset's)
    dpi: int = 100  # resolution of the PNG


@dataclass(frozen=True)
class View:
    """One drawn view: its group, its position in the group, the config field it comes
    from, and its pixels (N×3×s×s in [0, 1]) and parameters for every source image."""

    group: str
    number: int  # 1-based, within the group
    field: str
    pixels: Tensor
    params: ViewParams  # the rows of this view only: row i belongs to source image i

    @property
    def title(self) -> str:
        return f"{self.group} {self.number}: {self.field}"


def view_changes(args: list[str]) -> tuple[list[str], list[str]]:
    """``args`` split into this tool's options and the changes of the recipe's settings: the
    options with a dot (``--views.vflip-p 0.5``), each with the values that follow it."""
    own: list[str] = []
    changes: list[str] = []
    target = own
    for arg in args:
        if arg.startswith("--"):
            target = changes if "." in arg.split("=")[0] else own
        target.append(arg)
    return own, changes


def train_config(cfg: ShowConfig, changes: Sequence[str] = ()) -> tuple[TrainConfig, str]:
    """The recipe's preset with the command line's changes (``changes``: the recipe's own
    options, see ``view_changes``), and the preset's name."""
    try:
        recipe = get(cfg.recipe)
    except UnknownRecipe as error:
        fail(PROGRAM, f"--recipe {cfg.recipe}: {error}")
    presets = recipe.presets
    name = cfg.preset or next(iter(presets))
    if name not in presets:
        fail(PROGRAM, f"--preset {name}: recipe '{cfg.recipe}' has no such preset (presets: {', '.join(presets)})")
    train = replace(presets[name], data=cfg.data)
    if cfg.local_crops is not None:
        if not isinstance(train, LocalCropsTrainConfig):
            fail(PROGRAM, f"--local-crops {cfg.local_crops}: recipe '{cfg.recipe}' has no local crops")
        if cfg.local_crops < 0:
            fail(PROGRAM, f"--local-crops {cfg.local_crops}: must not be negative")
        train = replace(train, local_crops=cfg.local_crops)
    if changes:
        train = parse(recipe.train_config, train, changes, PROGRAM)
        try:
            validate(train)
            ViewRecipe(train.view_groups())  # refuses what the checks above do not see (a group's mixed grids)
        except (ConfigError, ValueError) as error:
            fail(PROGRAM, error)
    return train, name


def make_views(train: TrainConfig, images: Tensor, sizes: Tensor, seed: int) -> list[View]:
    """Every view of every group of ``train`` for the uint8 ``images`` (N×3×H×W, padded;
    ``sizes`` N×2). Each group samples its parameters and applies them in the order
    ``ViewRecipe`` does, so the pixels and parameters are the ones a training step makes
    from this seed; parameters are kept (the step's meta holds only boxes and flips)."""
    groups = train.view_groups()
    fields = {id(getattr(train, name)): name for name in reversed(view_fields(train))}  # first field wins
    generator = torch.Generator().manual_seed(seed)
    drawn, n = [], images.shape[0]
    for (group, configs), pipeline in zip(groups.items(), ViewRecipe(groups).groups.values(), strict=True):
        params = pipeline.sample(sizes, generator)
        pixels, _ = pipeline.apply(images, params, sizes)
        mean = torch.tensor(pipeline.config.mean)[None, :, None, None]
        std = torch.tensor(pipeline.config.std)[None, :, None, None]
        pixels = (pixels.float() * std + mean).clamp(0, 1)
        for k, config in enumerate(configs):
            rows = torch.arange(k * n, (k + 1) * n)  # view-major
            drawn.append(View(group, k + 1, fields.get(id(config), group), pixels[rows], params.take(rows)))
    return drawn


def caption(params: ViewParams, row: int) -> str:
    """The parameters of view ``row`` of ``params``, one line per op, as drawn under its tile:
    crop box (top, left, height, width in source pixels), flip, the jitter factors of the
    adjustments it has (brightness, contrast, saturation multipliers; hue shift in turns)
    when applied, grayscale, blur σ in pixels, solarisation; then, when the view drew any, its
    geometric ops (rotations counter-clockwise)."""
    top, left, height, width = params.crop.boxes[row].tolist()
    yes = {True: "yes", False: "no"}
    jitter = params.jitter
    if jitter.applied[row]:
        factors = jitter.factors[row].tolist()
        labels = {BRIGHTNESS: "b", CONTRAST: "c", SATURATION: "s", HUE: "h"}
        shown = [f"{labels[op]}{factors[op]:+.2f}" if op == HUE else f"{labels[op]}{factors[op]:.2f}"
                 for op in labels if jitter.enabled[row, op]]
        jitter_text = " ".join(shown)
    else:
        jitter_text = "none"
    sigma = float(params.blur_sigma[row])
    return "\n".join([
        f"crop ({top}, {left}, {height}, {width})",
        f"flip {yes[bool(params.flip[row])]} · gray {yes[bool(params.grayscale[row])]}",
        f"jitter {jitter_text}",
        f"blur {f'σ {sigma:.2f}' if sigma > 0 else 'none'} · solarised {yes[bool(params.solarize[row])]}",
        *geometry_caption(params, row),
    ])


def geometry_caption(params: ViewParams, row: int) -> list[str]:
    """The geometric ops view ``row`` drew, as one caption line (none when it drew none)."""
    drawn = []
    if params.vflip is not None and params.vflip[row]:
        drawn.append("vflip")
    if params.rotate is not None and params.rotate[row]:
        drawn.append("rot 90°")
    if params.local_rotation is not None and params.local_rotation[row, 1] > 0:
        quadrant, k = params.local_rotation[row].tolist()
        drawn.append(f"LoRot {QUADRANTS[quadrant]} {90 * k}°")
    order = params.region_order
    if order is not None and (order[row] != torch.arange(order.shape[1])).any():
        drawn.append("regions shuffled")
    return [" · ".join(drawn)] if drawn else []


def upsampled(views: list[View], info: DatasetInfo) -> str | None:
    """A warning when a group's views are larger than the stored images' shorter side (a
    preset for larger images, e.g. imagenette-128 on data converted at 64 px): such views
    are upsampled crops. None when every view fits."""
    shorter = min(info.image_size)
    larger = {view.group: view.pixels.shape[-1] for view in views if view.pixels.shape[-1] > shorter}
    if not larger:
        return None
    sizes = ", ".join(f"{group} {size} px" for group, size in larger.items())
    height, width = info.image_size
    return f"views ({sizes}) larger than the stored {height}×{width} images: they are upsampled"


def _pyplot():
    """matplotlib's pyplot for files only, imported when a figure is drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError as missing:
        fail(PROGRAM, f"needs the [report] extra ({missing.name or missing} is missing): pip install -e '.[report]'")
    return plt


def _wrapped(text: str, width: float, fontsize: float) -> list[str]:
    """``text`` in lines that fit ``width`` inches at ``fontsize`` points (a character of
    DejaVu Sans is about 0.55 em wide on average)."""
    chars = max(20, int(width * 72 / (0.55 * fontsize)))
    return [line for paragraph in text.splitlines() for line in textwrap.wrap(paragraph, chars)]


def _tile(figure: Figure, column: int, row: int, rows: int, bottom: float) -> Axes:
    """The axes of one tile, placed in inches so that titles and captions never overlap;
    ``bottom``: the height of the footnote below the rows."""
    width, height = figure.get_size_inches()
    left = column * COLUMN + (COLUMN - TILE) / 2
    low = bottom + (rows - 1 - row) * ROW + CAPTION
    axes = figure.add_axes((left / width, low / height, TILE / width, TILE / height))
    axes.set_xticks([])
    axes.set_yticks([])
    return axes


def _frame(axes: Axes, colour: str) -> None:
    for edge in axes.spines.values():
        edge.set_color(colour)
        edge.set_linewidth(3)


def draw(sources: Tensor, sizes: Tensor, views: list[View], labels: list[str], title: str, footnote: str) -> Figure:
    """The figure: per source image a row of its source tile, then every view's tile."""
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    rows, columns = len(sources), 1 + len(views)
    figure_width = columns * COLUMN
    title_lines, foot_lines = _wrapped(title, figure_width, 10), _wrapped(footnote, figure_width, 7)
    top, bottom = 0.3 + 0.19 * len(title_lines), 0.15 + 0.13 * len(foot_lines)
    figure = plt.figure(figsize=(figure_width, top + rows * ROW + bottom))
    text: dict[str, Any] = {"fontsize": 7, "ha": "center", "va": "top"}
    for r in range(rows):
        height, width = sizes[r].tolist()
        source = _tile(figure, 0, r, rows, bottom)
        source.imshow(sources[r, :, :height, :width].permute(1, 2, 0).numpy())
        _frame(source, SOURCE_COLOUR)
        source.set_title("source", fontsize=8, fontweight="bold", color=SOURCE_COLOUR)
        source.text(0.5, -0.04, f"{labels[r]}\n{height}×{width} px", transform=source.transAxes, **text)
        for c, view in enumerate(views):
            colour = VIEW_COLOURS[c % len(VIEW_COLOURS)]
            box_top, box_left, box_height, box_width = view.params.crop.boxes[r].tolist()
            source.add_patch(Rectangle((box_left - 0.5, box_top - 0.5), box_width, box_height, fill=False,
                                       edgecolor=colour, linewidth=1.2))
            tile = _tile(figure, c + 1, r, rows, bottom)
            tile.imshow(view.pixels[r].permute(1, 2, 0).numpy())
            _frame(tile, colour)
            tile.set_title(view.title, fontsize=8, color=colour)
            tile.text(0.5, -0.04, caption(view.params, r), transform=tile.transAxes, linespacing=1.3, **text)
        # A margin inside the frame, so that boxes along the image's border stay visible;
        # fixed limits, so that the boxes do not widen the axes.
        margin = 0.04 * max(height, width)
        source.set_xlim(-0.5 - margin, width - 0.5 + margin)
        source.set_ylim(height - 0.5 + margin, -0.5 - margin)
    inches = figure.get_size_inches()[1]
    figure.text(0.5, 1 - 0.15 / inches, "\n".join(title_lines), fontsize=10, ha="center", va="top")
    figure.text(0.5, 0.1 / inches, "\n".join(foot_lines), fontsize=7, ha="center", va="bottom", color="dimgray")
    return figure


def save_png(figure: Figure, path: Path, dpi: int) -> None:
    """The figure as an RGB PNG (matplotlib writes RGBA: a quarter larger for nothing)."""
    figure.set_dpi(dpi)
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3]  # type: ignore[attr-defined]  # Agg has it
    write_atomic(path, lambda temporary: Image.fromarray(pixels).save(temporary, format="PNG", optimize=True))


def show(cfg: ShowConfig, changes: Sequence[str] = ()) -> None:
    """Draw ``cfg``'s figure; ``changes``: the recipe's options changing its views."""
    if cfg.images < 1:
        fail(PROGRAM, f"--images {cfg.images}: must be at least 1")
    if cfg.dpi < 1:
        fail(PROGRAM, f"--dpi {cfg.dpi}: must be at least 1")
    if cfg.out.suffix.lower() != ".png":
        fail(PROGRAM, f"--out {cfg.out}: must be a .png file")
    train, preset = train_config(cfg, changes)
    try:
        info = read_info(cfg.data)
    except DatasetError as error:
        fail(PROGRAM, f"--data {error}")
    if cfg.split not in info.splits:
        fail(PROGRAM, f"--split {cfg.split}: {cfg.data} has no split '{cfg.split}' (has {', '.join(info.splits)})")
    try:
        data = open_split(info, cfg.split, torch.device("cpu"))
    except DatasetError as error:
        fail(PROGRAM, f"--data {error}")
    for i in cfg.index:
        if not 0 <= i < len(data):
            fail(PROGRAM, f"--index {i}: out of range, split '{cfg.split}' has {len(data)} images")
    if cfg.index:
        index = torch.tensor(cfg.index)
    else:  # spread over the split (converted splits are often sorted by class)
        index = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.images]
    images, sizes = data.fetch(index), data.sizes[index]
    views = make_views(train, images, sizes, cfg.seed)
    warning = upsampled(views, info)
    if warning:
        print(f"{PROGRAM}: warning: {warning}", file=sys.stderr)
    classes = [info.class_names[int(label)] if label >= 0 else "unlabelled" for label in data.labels[index].tolist()]
    labels = [f"#{i} · {name}" for i, name in zip(index.tolist(), classes, strict=True)]
    groups = ", ".join(f"{name} {len(configs)} × {configs[0].size} px" for name, configs in train.view_groups().items())
    title = f"{cfg.recipe} · preset {preset} · {cfg.data} ({cfg.split})\nviews: {groups}"
    if warning:
        title += f"\nwarning: {warning}"
    footnote = ("crop: top, left, height, width in source pixels · jitter (when applied): brightness, contrast, "
                "saturation factors, hue shift in turns · blur σ in pixels")
    figure = draw(images.float() / 255, sizes, views, labels, title, footnote)
    try:
        save_png(figure, cfg.out, cfg.dpi)
    except OSError as error:
        fail(PROGRAM, f"--out {cfg.out}: cannot write ({error})")
    finally:
        _pyplot().close(figure)
    print(f"{cfg.out}: {cfg.recipe} ({preset}), {len(views)} views of {len(index)} images of {cfg.data}")


def main(args: list[str] | None = None) -> None:
    own, changes = view_changes(sys.argv[1:] if args is None else args)
    show(parse(ShowConfig, None, own, PROGRAM, description=__doc__), changes)


if __name__ == "__main__":
    main()
