"""View recipes: the augmentation ops composed into the views a method trains on."""

from __future__ import annotations

import itertools

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
    ViewParams,
)
from pipelines.batch import ViewMeta
from pipelines.fused import fused_views, fused_views_supported
from pipelines.geometry import LocalRotation, RandomRotate90, RandomVerticalFlip, RegionConfusion
from pipelines.spec import GROUP_SETTINGS, ViewConfig


def _sampling_ops(c: ViewConfig) -> tuple:
    return (
        RandomResizedCrop(c.size, c.crop_scale, c.crop_ratio),
        RandomHorizontalFlip(c.flip_p),
        ColorJitter(*c.jitter, p=c.jitter_p),
        RandomGrayscale(c.grayscale_p),
        GaussianBlur(c.blur_kernel, c.blur_sigma, p=c.blur_p),
        RandomSolarize(c.solarize_threshold, c.solarize_p),
        RandomVerticalFlip(c.vflip_p),
        RandomRotate90(c.rotate_p),
        LocalRotation(c.local_rotation_p),
        RegionConfusion(c.region_confusion_p, c.region_grid, c.region_neighbourhood),
    )


def _geometric(c: ViewConfig) -> bool:
    """Whether ``c`` has any of the ops of ``pipelines/geometry.py`` (the fused kernel has none)."""
    return max(c.vflip_p, c.rotate_p, c.local_rotation_p, c.region_confusion_p) > 0


class ViewPipeline:
    """Makes one view per ``ViewConfig`` of every image, all at one resolution, in one batch.

    The views of a group may differ in their probabilities and strengths (BYOL's asymmetric
    blur and solarisation, the weak teacher view of ReSSL) but not in ``GROUP_SETTINGS``.
    Consecutive equal configs draw their parameters together. ``fused``: on CUDA, small
    views take the one-launch Triton kernel; ``out_dtype``: the views' dtype (bf16 under
    bf16 autocast: the backbone's first convolution reads them as they are).

    The ops, in order: the crop (with the horizontal flip folded in), then the geometric
    ops — vertical flip, rotation by 90°, LoRot-I, region confusion — then colour jitter,
    grayscale, blur and solarisation, so that the blur smooths the region borders like any
    other edge. ``ViewMeta`` records the crop boxes and horizontal flips only: the geometric
    ops are not in it (VICRegL's location matching sees the crop geometry alone), and a
    group with any of them takes the batched ops, not the fused kernel.
    """

    def __init__(self, configs: list[ViewConfig], fused: bool = False, out_dtype: torch.dtype = torch.float32) -> None:
        if not configs:
            raise ValueError("a view group needs at least one view")
        for setting in GROUP_SETTINGS:
            if len({getattr(c, setting) for c in configs}) > 1:
                raise ValueError(f"the views of one group must share '{setting}': put them in separate groups")
        self.configs, self.count = configs, len(configs)
        self.config = c = configs[0]  # the group's shared settings
        # One set of sampling ops per run of equal configs (probabilities and ranges differ).
        self.runs = [(_sampling_ops(cfg), len(list(run))) for cfg, run in itertools.groupby(configs)]
        (self.crop, self.flip, self.jitter, self.grayscale, self.blur, self.solarize,
         self.vflip, self.rotate, self.local_rotation, self.region_confusion) = self.runs[0][0]
        self.normalize = Normalize(c.mean, c.std)
        self.fused, self.out_dtype = fused, out_dtype
        self.geometric = any(_geometric(config) for config in configs)

    def __call__(self, images: Tensor, sizes: Tensor, generator: torch.Generator) -> tuple[Tensor, ViewMeta]:
        """uint8 N×3×H×W (padded; ``sizes`` N×2 on the CPU) → (count·N)×3×s×s views."""
        return self.apply(images, self.sample(sizes, generator))

    def sample(self, sizes: Tensor, generator: torch.Generator) -> ViewParams:
        """Parameters for every view of each image of ``sizes`` (N×2, CPU), view-major."""
        parts = []
        for ops, count in self.runs:
            crop, flip, jitter, grayscale, blur, solarize, vflip, rotate, local_rotation, region_confusion = ops
            n = sizes.shape[0] * count
            parts.append(
                ViewParams(
                    crop=crop.sample(n, generator, sizes.repeat(count, 1)),
                    flip=flip.sample(n, generator),
                    jitter=jitter.sample(n, generator),
                    grayscale=grayscale.sample(n, generator),
                    blur_sigma=blur.sample(n, generator),
                    solarize=solarize.sample(n, generator),
                    # Drawn last (and only where p > 0): they leave the other ops' draws as they were.
                    vflip=vflip.sample(n, generator),
                    rotate=rotate.sample(n, generator),
                    local_rotation=local_rotation.sample(n, generator),
                    region_order=region_confusion.sample(n, generator),
                )
            )
        return parts[0] if len(parts) == 1 else ViewParams.concatenate(parts)

    def apply(self, images: Tensor, params: ViewParams, sizes: Tensor | None = None) -> tuple[Tensor, ViewMeta]:
        """The views of ``images`` (uint8 or float N×3×H×W; ``sizes`` N×2 on the CPU where
        the batch is padded) with ``params``: float, normalised, channels-last, view-major
        (view k of image i at row k·N + i). On CUDA, small images take the one-launch Triton
        kernel (``pipelines/fused.py``, in ``out_dtype``), else one batched op after another."""
        if self.fused and not self.geometric and images.is_cuda and fused_views_supported(images, self.config):
            if sizes is None:
                sizes = torch.tensor([list(images.shape[-2:])]).expand(images.shape[0], 2)
            views = fused_views(images, sizes, params, self.config, self.count, self.out_dtype)
            return views, self._meta(params, images.device)
        sources = torch.cat([images] * self.count)  # view-major; keeps channels-last memory
        # Every op after the crop works in place on the crop's fresh output.
        views = self.crop(sources, params.crop, params.flip)  # the flip folded into the crop
        views = self._geometry(views, params)
        views = self.jitter(views, params.jitter, inplace=True)
        views = self.grayscale(views, params.grayscale, inplace=True)
        views = self.blur(views, params.blur_sigma, inplace=True)
        views = self.solarize(views, params.solarize, inplace=True)
        views = self.normalize(views, inplace=True)
        return views.to(self.out_dtype), self._meta(params, images.device)

    def _geometry(self, views: Tensor, params: ViewParams) -> Tensor:
        """The geometric ops, in order, in place; those whose parameters are None are skipped."""
        for op, drawn in ((self.vflip, params.vflip), (self.rotate, params.rotate),
                          (self.local_rotation, params.local_rotation), (self.region_confusion, params.region_order)):
            if drawn is not None:
                views = op(views, drawn, inplace=True)
        return views

    @staticmethod
    def _meta(params: ViewParams, device: torch.device) -> ViewMeta:
        return ViewMeta(params.crop.boxes.to(device, non_blocking=True), params.flip.to(device, non_blocking=True))


class ViewRecipe:
    """Named groups of views, one per resolution — ``{"global": [view1, view2], "local":
    [small] * 6}`` — each group a list of per-view configs. Evaluation images take the
    first group's size and normalisation. ``fused`` and ``out_dtype`` as ``ViewPipeline``'s."""

    def __init__(
        self, groups: dict[str, list[ViewConfig]], fused: bool = False, out_dtype: torch.dtype = torch.float32
    ) -> None:
        self.groups = {name: ViewPipeline(list(configs), fused, out_dtype) for name, configs in groups.items()}

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

    @property
    def first(self) -> ViewConfig:
        """The first group's shared settings: evaluation images take its size and
        normalisation, and a ViT its image size."""
        return next(iter(self.groups.values())).config


def two_views(config: ViewConfig) -> ViewRecipe:
    """Two views of the same recipe (MoCo v2, SimCLR)."""
    return ViewRecipe({"global": [config, config]})
