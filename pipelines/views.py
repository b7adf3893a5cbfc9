"""View recipes: the augmentation ops composed into the views a method trains on."""

from __future__ import annotations

import dataclasses
import itertools
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


def weak_view() -> ViewConfig:
    """Mini-SSL's weak teacher view (``get_weak_augment``): crop (0.2–1) and a flip with
    p 0.9 (sic), no colour — for ReSSL, MSF and SCE."""
    return ViewConfig(flip_p=0.9, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)


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
        return _map_fields(lambda value: value[rows], self)

    @staticmethod
    def concatenate(parts: list[ViewParams]) -> ViewParams:
        """The rows of several parameter sets, one after the other."""
        return _map_fields(torch.cat, *parts)


def _map_fields(function, *values):
    """``function`` over the tensors of (nested dataclasses) ``values``, field by field."""
    if isinstance(values[0], Tensor):
        return function(values[0]) if len(values) == 1 else function(list(values))
    fields = dataclasses.fields(values[0])
    return type(values[0])(**{f.name: _map_fields(function, *(getattr(v, f.name) for v in values)) for f in fields})


# Settings applied to a whole resolution group at once: its views must agree on them.
GROUP_SETTINGS = ("size", "blur_kernel", "solarize_threshold", "mean", "std")


def _sampling_ops(c: ViewConfig) -> tuple:
    return (
        RandomResizedCrop(c.size, c.crop_scale, c.crop_ratio),
        RandomHorizontalFlip(c.flip_p),
        ColorJitter(*c.jitter, p=c.jitter_p),
        RandomGrayscale(c.grayscale_p),
        GaussianBlur(c.blur_kernel, c.blur_sigma, p=c.blur_p),
        RandomSolarize(c.solarize_threshold, c.solarize_p),
    )


class ViewPipeline:
    """Makes one view per ``ViewConfig`` of every image, all at one resolution, in one batch.

    The views of a group may differ in their probabilities and strengths (BYOL's asymmetric
    blur and solarisation, the weak teacher view of ReSSL) but not in ``GROUP_SETTINGS``.
    Consecutive equal configs draw their parameters together.
    """

    def __init__(self, configs: list[ViewConfig]) -> None:
        if not configs:
            raise ValueError("a view group needs at least one view")
        for setting in GROUP_SETTINGS:
            if len({getattr(c, setting) for c in configs}) > 1:
                raise ValueError(f"the views of one group must share '{setting}': put them in separate groups")
        self.configs, self.count = configs, len(configs)
        self.config = c = configs[0]  # the group's shared settings
        # One set of sampling ops per run of equal configs (probabilities and ranges differ).
        self.runs = [(_sampling_ops(cfg), len(list(run))) for cfg, run in itertools.groupby(configs)]
        self.crop, self.flip, self.jitter, self.grayscale, self.blur, self.solarize = self.runs[0][0]
        self.normalize = Normalize(c.mean, c.std)
        # Set by the trainer: the fused CUDA kernel on or off, and the views' dtype (bf16
        # under bf16 autocast: the backbone's first convolution reads them as they are).
        self.fused, self.out_dtype = True, torch.float32

    def __call__(self, images: Tensor, sizes: Tensor, generator: torch.Generator) -> tuple[Tensor, ViewMeta]:
        """uint8 N×3×H×W (padded; ``sizes`` N×2 on the CPU) → (count·N)×3×s×s views."""
        return self.apply(images, self.sample(sizes, generator))

    def sample(self, sizes: Tensor, generator: torch.Generator) -> ViewParams:
        """Parameters for every view of each image of ``sizes`` (N×2, CPU), view-major."""
        parts = []
        for (crop, flip, jitter, grayscale, blur, solarize), count in self.runs:
            n = sizes.shape[0] * count
            parts.append(
                ViewParams(
                    crop=crop.sample(n, generator, sizes.repeat(count, 1)),
                    flip=flip.sample(n, generator),
                    jitter=jitter.sample(n, generator),
                    grayscale=grayscale.sample(n, generator),
                    blur_sigma=blur.sample(n, generator),
                    solarize=solarize.sample(n, generator),
                )
            )
        return parts[0] if len(parts) == 1 else ViewParams.concatenate(parts)

    def apply(self, images: Tensor, params: ViewParams, sizes: Tensor | None = None) -> tuple[Tensor, ViewMeta]:
        """The views of ``images`` (uint8 or float N×3×H×W; ``sizes`` N×2 on the CPU where
        the batch is padded) with ``params``: float, normalised, channels-last, view-major
        (view k of image i at row k·N + i). On CUDA, small images take the one-launch Triton
        kernel (``pipelines/fused.py``, in ``out_dtype``), else one batched op after another."""
        if self.fused and images.is_cuda:
            from pipelines.fused import fused_views, fused_views_supported  # Triton: imported on CUDA only

            if fused_views_supported(images, self.config):
                if sizes is None:
                    sizes = torch.tensor([list(images.shape[-2:])]).expand(images.shape[0], 2)
                views = fused_views(images, sizes, params, self.config, self.count, self.out_dtype)
                return views, self._meta(params, images.device)
        sources = torch.cat([images] * self.count)  # view-major; keeps channels-last memory
        # Every op after the crop works in place on the crop's fresh output.
        views = self.crop(sources, params.crop, params.flip)  # the flip folded into the crop
        views = self.jitter(views, params.jitter, inplace=True)
        views = self.grayscale(views, params.grayscale, inplace=True)
        views = self.blur(views, params.blur_sigma, inplace=True)
        views = self.solarize(views, params.solarize, inplace=True)
        views = self.normalize(views, inplace=True)
        return views.to(self.out_dtype), self._meta(params, images.device)

    @staticmethod
    def _meta(params: ViewParams, device: torch.device) -> ViewMeta:
        return ViewMeta(params.crop.boxes.to(device, non_blocking=True), params.flip.to(device, non_blocking=True))


class ViewRecipe:
    """Named groups of views, one per resolution — ``{"global": [view1, view2], "local":
    [small] * 6}`` — each group a list of per-view configs. Evaluation images take the
    first group's size and normalisation."""

    def __init__(self, groups: dict[str, list[ViewConfig]]) -> None:
        self.groups = {name: ViewPipeline(list(configs)) for name, configs in groups.items()}

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
            views[name], meta[name] = pipeline.apply(images, params, sizes[offset : offset + n])
        return views, meta

    def configure(self, fused: bool, out_dtype: torch.dtype) -> None:
        """The fused CUDA kernel on or off, and the dtype the views are made in."""
        for pipeline in self.groups.values():
            pipeline.fused, pipeline.out_dtype = fused, out_dtype

    @property
    def first(self) -> ViewConfig:
        """The first group's shared settings: evaluation images take its size and
        normalisation, and a ViT its image size."""
        return next(iter(self.groups.values())).config


def two_views(config: ViewConfig) -> ViewRecipe:
    """Two views of the same recipe (MoCo v2, SimCLR)."""
    return ViewRecipe({"global": [config, config]})


def asymmetric_views(first: ViewConfig, second: ViewConfig) -> ViewRecipe:
    """Two views of one size, each with its own recipe: BYOL's split of blur and
    solarisation; a strong student view and a weak teacher view (ReSSL, MSF, SCE)."""
    return ViewRecipe({"global": [first, second]})


def multi_crop(first: ViewConfig, second: ViewConfig, local: ViewConfig, local_count: int) -> ViewRecipe:
    """Two global views plus ``local_count`` small ones in a group of their own (SwAV, DINO)."""
    groups = {"global": [first, second]}
    if local_count:
        groups["local"] = [local] * local_count
    return ViewRecipe(groups)
