"""The view pipeline: layout, view-major order, determinism, and every view against
torchvision's functional ops applied one image at a time with the same parameters."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fastssl.config import MultiCropTrainConfig  # noqa: E402
from pipelines.spec import ViewConfig  # noqa: E402
from pipelines.views import ViewPipeline, ViewRecipe, two_views  # noqa: E402

N = 8
# Normalisation divides by std ≈ 0.2: float32 round-off of 1e-5 on [0, 1] becomes 5e-5.
ATOL = 5e-5
CROP_ONLY = ViewConfig(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


def batch(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N×3×32×32 in channels-last memory (as the loader gathers it), and sizes."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g)
    return pixels.permute(0, 3, 1, 2), torch.tensor([[32, 32]]).expand(n, 2)


def make_views(config: ViewConfig, seed: int = 1):
    images, sizes = batch()
    views, meta = two_views(config)(images, sizes, torch.Generator().manual_seed(seed))
    return images, views["global"], meta["global"]


def test_two_views_shapes_layout_and_normalisation():
    images, views, meta = make_views(ViewConfig())
    assert views.shape == (2 * N, 3, 32, 32) and views.dtype == torch.float32
    assert views.is_contiguous(memory_format=torch.channels_last)
    config = ViewConfig()
    mean = torch.tensor(config.mean)[None, :, None, None]
    std = torch.tensor(config.std)[None, :, None, None]
    pixels = views * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert meta.boxes.shape == (2 * N, 4) and meta.boxes.dtype == torch.int64
    assert meta.flipped.shape == (2 * N,) and meta.flipped.dtype == torch.bool
    assert not torch.equal(views[:N], views[N:])  # the two views of an image differ


def test_view_major_order_matches_the_recorded_boxes():
    images, views, meta = make_views(CROP_ONLY)
    for k in range(2):
        for i in range(N):
            row = k * N + i
            top, left, h, w = meta.boxes[row].tolist()
            crop = F.resized_crop(images[i].float() / 255, top, left, h, w, [32, 32], antialias=True)
            expected = F.normalize(crop, list(CROP_ONLY.mean), list(CROP_ONLY.std))
            torch.testing.assert_close(views[row], expected, atol=ATOL, rtol=0)


def test_recorded_flips():
    config = dataclasses.replace(CROP_ONLY, flip_p=0.5)
    images, views, meta = make_views(config)
    assert 0 < meta.flipped.sum() < 2 * N
    for row in range(2 * N):
        top, left, h, w = meta.boxes[row].tolist()
        crop = F.resized_crop(images[row % N].float() / 255, top, left, h, w, [32, 32], antialias=True)
        crop = F.horizontal_flip(crop) if meta.flipped[row] else crop
        expected = F.normalize(crop, list(config.mean), list(config.std))
        torch.testing.assert_close(views[row], expected, atol=ATOL, rtol=0)


def test_deterministic_for_a_generator_seed():
    _, first, meta = make_views(ViewConfig(), seed=3)
    _, again, meta_again = make_views(ViewConfig(), seed=3)
    _, other, _ = make_views(ViewConfig(), seed=4)
    assert torch.equal(first, again)
    assert torch.equal(meta.boxes, meta_again.boxes) and torch.equal(meta.flipped, meta_again.flipped)
    assert not torch.equal(first, other)


def test_source_images_are_not_modified():
    images, sizes = batch()
    before = images.clone()
    two_views(ViewConfig(solarize_p=0.5))(images, sizes, torch.Generator().manual_seed(5))
    assert torch.equal(images, before)


ADJUST = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)


def torchvision_view(image: torch.Tensor, params, row: int, config: ViewConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One view with torchvision's functional ops: (normalised view, pixels before solarize)."""
    top, left, h, w = params.crop.boxes[row].tolist()
    x = F.resized_crop(image.float() / 255, top, left, h, w, [config.size] * 2, antialias=True)
    if params.flip[row]:
        x = F.horizontal_flip(x)
    if params.jitter.applied[row]:
        for op in params.jitter.order[row].tolist():
            x = ADJUST[op](x, params.jitter.factors[row, op].item())
    if params.grayscale[row]:
        x = F.rgb_to_grayscale(x, num_output_channels=3)
    sigma = params.blur_sigma[row].item()
    if sigma > 0:
        x = F.gaussian_blur(x, [config.blur_kernel] * 2, [sigma, sigma])
    before_solarize = x
    if params.solarize[row]:
        x = F.solarize(x, config.solarize_threshold)
    return F.normalize(x, list(config.mean), list(config.std)), before_solarize


@pytest.mark.parametrize(
    "config",
    [
        ViewConfig(),
        ViewConfig(blur_p=1.0, grayscale_p=0.5, solarize_p=0.5, jitter=(0.8, 0.8, 0.8, 0.2)),
        ViewConfig(size=24, crop_scale=(0.08, 1.0), flip_p=0.0, blur_kernel=7),
        ViewConfig(flip_p=1.0, jitter_p=1.0, grayscale_p=1.0, blur_p=1.0, solarize_p=1.0),
    ],
    ids=["default", "solarize", "small", "every-op-on-every-view"],
)
def test_every_view_matches_torchvision(config):
    images, sizes = batch(6, seed=6)
    pipeline = ViewPipeline([config, config])
    params = pipeline.sample(sizes, torch.Generator().manual_seed(7))
    views, meta = pipeline.apply(images, params)
    assert torch.equal(meta.boxes, params.crop.boxes) and torch.equal(meta.flipped, params.flip)
    for row in range(views.shape[0]):
        expected, before = torchvision_view(images[row % 6], params, row, config)
        # Solarize is a step at the threshold: skip pixels that sit within round-off of it.
        away = (before - config.solarize_threshold).abs() > 1e-4
        torch.testing.assert_close(views[row][away], expected[away], atol=ATOL, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_without_synchronising():
    images, sizes = batch()
    pipeline = ViewPipeline([ViewConfig(solarize_p=0.5)] * 2)
    params = pipeline.sample(sizes, torch.Generator().manual_seed(8))
    expected, _ = pipeline.apply(images, params)
    on_device = images.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # parameters stay on the host: no waiting
    try:
        views, meta = pipeline.apply(on_device, params)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert views.is_cuda and meta.boxes.is_cuda
    assert views.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(views.cpu(), expected, atol=ATOL, rtol=0)


def test_each_view_of_a_group_follows_its_own_config():
    images, sizes = batch(6, seed=3)
    strong = ViewConfig(blur_p=1.0, solarize_p=0.0, jitter_p=1.0)
    weak = ViewConfig(blur_p=0.0, solarize_p=1.0, jitter_p=0.0, grayscale_p=0.0, flip_p=0.0)
    pipeline = ViewPipeline([strong, weak])
    params = pipeline.sample(sizes, torch.Generator().manual_seed(1))
    first, second = slice(0, 6), slice(6, 12)
    assert (params.blur_sigma[first] > 0).all() and (params.blur_sigma[second] == 0).all()
    assert not params.solarize[first].any() and params.solarize[second].all()
    assert params.jitter.applied[first].all() and not params.jitter.applied[second].any()
    assert not params.flip[second].any() and not params.grayscale[second].any()
    views, _ = pipeline.apply(images, params)
    assert views.shape == (12, 3, 32, 32)
    # the weak view is exactly a solarised crop of its own (solarise alone on a 32-px config)
    only_weak = ViewPipeline([weak]).apply(images, params.take(torch.arange(6, 12)))[0]
    torch.testing.assert_close(views[second], only_weak)


def test_multi_crop_makes_a_group_per_resolution_and_refuses_mixed_sizes():
    images, sizes = batch(4, seed=2)
    cfg = MultiCropTrainConfig(data=None, method=None, second_views=ViewConfig(solarize_p=0.2),  # type: ignore[arg-type]
                               local_views=ViewConfig(size=16, crop_scale=(0.05, 0.2)), local_crops=3)
    recipe = ViewRecipe(cfg.view_groups())
    views, meta = recipe(images, sizes, torch.Generator().manual_seed(0))
    assert views["global"].shape == (8, 3, 32, 32) and views["local"].shape == (12, 3, 16, 16)
    areas = meta["local"].boxes[:, 2] * meta["local"].boxes[:, 3]
    assert (areas <= 0.2 * 32 * 32 * 1.2).all()  # small crops, up to rounding of the sides
    with pytest.raises(ValueError, match="must share 'size'"):
        ViewPipeline([ViewConfig(), ViewConfig(size=16)])


def test_views_of_different_jitter_strengths_share_a_batch():
    images, sizes = batch(6, seed=4)
    plain = ViewConfig(jitter_p=1.0, jitter=(0.0, 0.0, 0.0, 0.0), grayscale_p=0.0, blur_p=0.0, flip_p=0.0)
    hue_only = dataclasses.replace(plain, jitter=(0.0, 0.0, 0.0, 0.5))
    for first, second in ((plain, hue_only), (hue_only, plain)):
        pipeline = ViewPipeline([first, second])
        params = pipeline.sample(sizes, torch.Generator().manual_seed(2))
        views, _ = pipeline.apply(images, params)
        unjittered = dataclasses.replace(params, jitter=dataclasses.replace(params.jitter, applied=torch.zeros(12) > 0))
        crops = pipeline.apply(images, unjittered)[0]
        hue_rows = slice(6, 12) if second is hue_only else slice(0, 6)
        other = slice(0, 6) if second is hue_only else slice(6, 12)
        torch.testing.assert_close(views[other], crops[other])
        assert (views[hue_rows] - crops[hue_rows]).abs().amax() > 0.1
