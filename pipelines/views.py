"""View recipes: the augmentation ops composed into the views a method trains on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from pipelines.augment import (
    ColorJitter,
    CropParams,
    GaussianBlur,
    JitterParams,
    Normalize,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomSolarize,
)
from pipelines.batch import ViewMeta

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


@dataclass(frozen=True)
class ViewConfig:
    """One view's augmentation, in the order applied (the MoCo v2 / SimCLR CIFAR recipe)."""

    size: int = 32  # output side in pixels
    crop_scale: tuple[float, float] = (0.2, 1.0)  # fraction of the source area
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # width / height
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # b, c, s, hue
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels
    # Taps of the Gaussian: 2·⌈3σ_max⌉+1 approximates the untruncated PIL blur Mini-SSL uses.
    blur_kernel: int = 13
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5  # on [0, 1] intensities
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD


@dataclass
class ViewParams:
    """Every view's random parameters (view-major), drawn on the CPU."""

    crop: CropParams
    flip: Tensor  # (V·N) bool
    jitter: JitterParams
    grayscale: Tensor  # (V·N) bool
    blur_sigma: Tensor  # (V·N) σ in pixels, 0 where not blurred
    solarize: Tensor  # (V·N) bool

    def take(self, rows: Tensor) -> ViewParams:
        """The parameters of the given rows only (a process's share of a global batch)."""

        def select(value):
            if isinstance(value, Tensor):
                return value[rows]
            return type(value)(**{f.name: select(getattr(value, f.name)) for f in dataclasses.fields(value)})

        return select(self)


class ViewPipeline:
    """Makes ``count`` views of every image with one ``ViewConfig``, all in one batch."""

    def __init__(self, config: ViewConfig, count: int) -> None:
        self.config, self.count = config, count
        c = config
        self.crop = RandomResizedCrop(c.size, c.crop_scale, c.crop_ratio)
        self.flip = RandomHorizontalFlip(c.flip_p)
        self.jitter = ColorJitter(*c.jitter, p=c.jitter_p)
        self.grayscale = RandomGrayscale(c.grayscale_p)
        self.blur = GaussianBlur(c.blur_kernel, c.blur_sigma, p=c.blur_p)
        self.solarize = RandomSolarize(c.solarize_threshold, c.solarize_p)
        self.normalize = Normalize(c.mean, c.std)

    def __call__(self, images: Tensor, sizes: Tensor, generator: torch.Generator) -> tuple[Tensor, ViewMeta]:
        """uint8 N×3×H×W (padded; ``sizes`` N×2 on the CPU) → (count·N)×3×s×s views."""
        return self.apply(images, self.sample(sizes, generator))

    def sample(self, sizes: Tensor, generator: torch.Generator) -> ViewParams:
        """Parameters for ``count`` views of each of the images of ``sizes`` (N×2, CPU)."""
        n = sizes.shape[0] * self.count
        return ViewParams(
            crop=self.crop.sample(n, generator, sizes.repeat(self.count, 1)),
            flip=self.flip.sample(n, generator),
            jitter=self.jitter.sample(n, generator),
            grayscale=self.grayscale.sample(n, generator),
            blur_sigma=self.blur.sample(n, generator),
            solarize=self.solarize.sample(n, generator),
        )

    def apply(self, images: Tensor, params: ViewParams) -> tuple[Tensor, ViewMeta]:
        """The views of ``images`` (uint8 or float N×3×H×W) with ``params``: float,
        normalised, channels-last, view-major (view k of image i at row k·N + i)."""
        sources = torch.cat([images] * self.count)  # view-major; keeps channels-last memory
        # Every op after the crop works in place on the crop's fresh output.
        views = self.crop(sources, params.crop, params.flip)  # the flip folded into the crop
        views = self.jitter(views, params.jitter, inplace=True)
        views = self.grayscale(views, params.grayscale, inplace=True)
        views = self.blur(views, params.blur_sigma, inplace=True)
        views = self.solarize(views, params.solarize, inplace=True)
        views = self.normalize(views, inplace=True)
        device = images.device
        meta = ViewMeta(params.crop.boxes.to(device, non_blocking=True), params.flip.to(device, non_blocking=True))
        return views, meta


class ViewRecipe:
    """Named groups of views, one per resolution: ``{"global": (config, 2), ...}``."""

    def __init__(self, groups: dict[str, tuple[ViewConfig, int]]) -> None:
        self.groups = {name: ViewPipeline(cfg, count) for name, (cfg, count) in groups.items()}

    def __call__(
        self, images: Tensor, sizes: Tensor, generator: torch.Generator, offset: int = 0
    ) -> tuple[dict[str, Tensor], dict[str, ViewMeta]]:
        """Views of ``images``, which are rows ``offset …`` of a global batch whose sizes
        are ``sizes``. Parameters are drawn for the whole global batch and each process
        keeps its share, so the views of an image do not depend on the process count."""
        views, meta = {}, {}
        total, n = sizes.shape[0], images.shape[0]
        for name, pipeline in self.groups.items():
            params = pipeline.sample(sizes, generator)
            if n != total:
                rows = torch.arange(offset, offset + n) + total * torch.arange(pipeline.count)[:, None]
                params = params.take(rows.flatten())
            views[name], meta[name] = pipeline.apply(images, params)
        return views, meta

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        first = next(iter(self.groups.values())).config
        return first.mean, first.std


def two_views(config: ViewConfig) -> ViewRecipe:
    """Two views of the same recipe (MoCo v2, SimCLR)."""
    return ViewRecipe({"global": (config, 2)})
