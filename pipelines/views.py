"""View recipes: the augmentation ops composed into the views a method trains on."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipelines.augment import (
    ColorJitter,
    GaussianBlur,
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

    def __call__(
        self, images: Tensor, sizes: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, ViewMeta]:
        """uint8 N×3×H×W (padded; ``sizes`` N×2 on the CPU) → (count·N)×3×s×s views."""
        n = images.shape[0] * self.count
        sources = images.repeat(self.count, 1, 1, 1)  # view-major
        crop = self.crop.sample(n, generator, sizes.repeat(self.count, 1))
        flip = self.flip.sample(n, generator)
        jitter = self.jitter.sample(n, generator)
        gray = self.grayscale.sample(n, generator)
        sigma = self.blur.sample(n, generator)
        solarize = self.solarize.sample(n, generator)

        views = self.crop(sources, crop, flip)  # the flip is folded into the crop
        views = self.jitter(views, jitter)
        if self.config.solarize_p > 0:
            views = self.grayscale(views, gray)
            views = self.blur(views, sigma)
            views = self.normalize(self.solarize(views, solarize))
        else:
            # Grayscale and blur are both linear and commute: the grayscale is done with
            # the normalisation, in one pass that also writes channels-last memory.
            views = self.normalize(self.blur(views, sigma), grayscale=gray)
        device = images.device
        meta = ViewMeta(crop.boxes.to(device, non_blocking=True), flip.to(device, non_blocking=True))
        return views, meta


class ViewRecipe:
    """Named groups of views, one per resolution: ``{"global": (config, 2), ...}``."""

    def __init__(self, groups: dict[str, tuple[ViewConfig, int]]) -> None:
        self.groups = {name: ViewPipeline(cfg, count) for name, (cfg, count) in groups.items()}

    def __call__(
        self, images: Tensor, sizes: Tensor, generator: torch.Generator
    ) -> tuple[dict[str, Tensor], dict[str, ViewMeta]]:
        views, meta = {}, {}
        for name, pipeline in self.groups.items():
            views[name], meta[name] = pipeline(images, sizes, generator)
        return views, meta

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        first = next(iter(self.groups.values())).config
        return first.mean, first.std


def two_views(config: ViewConfig) -> ViewRecipe:
    """Two views of the same recipe (MoCo v2, SimCLR)."""
    return ViewRecipe({"global": (config, 2)})
