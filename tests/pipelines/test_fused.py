"""The one-launch view kernel makes the same views as the op-by-op ``ViewPipeline.apply``
from the same parameters: under TRITON_INTERPRET=1 on a CPU (set by tests/conftest.py) at
tiny sizes, natively on a GPU (``-m gpu``) at CIFAR size in bfloat16."""

import dataclasses

import pytest
import torch

from pipelines.augment import CropParams
from pipelines.fused import fused_views, fused_views_supported
from pipelines.spec import ViewConfig
from pipelines.views import ViewPipeline

EVERY_OP = ViewConfig(size=12, flip_p=1.0, jitter_p=1.0, grayscale_p=1.0, blur_p=1.0, solarize_p=1.0)
NO_OP = ViewConfig(size=12, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
# BYOL's split: no hue in the first view, hue in the second; blur and solarisation differ too.
FIRST = ViewConfig(size=12, jitter=(0.4, 0.4, 0.2, 0.0), jitter_p=1.0, blur_p=1.0, solarize_p=0.0)
SECOND = ViewConfig(size=12, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=1.0, blur_p=0.1, solarize_p=0.2)


def square_batch(n=3, side=16, device="cpu"):
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return images.to(device), torch.tensor([[side, side]] * n)


def padded_batch():
    """Three images of different sizes in a 20×24 batch, with noise in the padding."""
    sizes = torch.tensor([[16, 16], [20, 12], [9, 24]])
    images = torch.randint(0, 256, (3, 3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return images, sizes


def assert_same_views(configs, images, sizes, params=None, out_dtype=torch.float32, atol=1e-4, rtol=0.0):
    pipeline = ViewPipeline(configs)
    if params is None:
        params = pipeline.sample(sizes, torch.Generator().manual_seed(2))
    expected, _ = pipeline.apply(images, params)
    views = fused_views(images, sizes, params, pipeline.config, pipeline.count, out_dtype)
    assert views.shape == expected.shape and views.dtype == out_dtype
    assert views.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(views.float(), expected, atol=atol, rtol=rtol)


@pytest.fixture(autouse=True)
def needs_triton():
    if not fused_views_supported(torch.zeros(1, 3, 16, 16), ViewConfig(size=16)):
        pytest.skip("Triton is not installed")


@pytest.mark.parametrize("configs", [[EVERY_OP] * 4, [NO_OP] * 2, [ViewConfig(size=16)] * 2, [FIRST, SECOND]],
                         ids=["every-op", "no-op", "cifar-default", "asymmetric"])
def test_matches_the_pipeline(configs):
    assert_same_views(configs, *square_batch())


def test_disabled_adjustments_are_skipped_whatever_their_factors():
    images, sizes = square_batch()
    pipeline = ViewPipeline([EVERY_OP] * 2)
    params = pipeline.sample(sizes, torch.Generator().manual_seed(3))
    jitter = params.jitter
    enabled = torch.rand(jitter.enabled.shape, generator=torch.Generator().manual_seed(4)) < 0.5
    params.jitter = dataclasses.replace(jitter, enabled=enabled)
    params.grayscale = torch.zeros_like(params.grayscale)  # keep the colours to compare
    assert_same_views([EVERY_OP] * 2, images, sizes, params)


@pytest.mark.parametrize("source", ["uint8", "channels-last", "float"])
def test_padded_batch_of_mixed_sizes_downscaled(source):
    images, sizes = padded_batch()
    if source == "channels-last":
        images = images.contiguous(memory_format=torch.channels_last)
    elif source == "float":
        images = images.float() / 255
    assert_same_views([ViewConfig(size=8)] * 2, images, sizes)


def test_flipped_downscaled_crop():
    images, sizes = square_batch()
    pipeline = ViewPipeline([ViewConfig(size=8)] * 2)
    params = pipeline.sample(sizes, torch.Generator().manual_seed(5))
    boxes = torch.tensor([[0, 0, 16, 16], [2, 3, 14, 11], [5, 1, 9, 15]]).repeat(2, 1)  # 1.1–2× downscaling
    params = dataclasses.replace(params, crop=CropParams(boxes), flip=torch.ones(6, dtype=torch.bool))
    assert_same_views([ViewConfig(size=8)] * 2, images, sizes, params)


def test_supported_sizes():
    small = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    assert fused_views_supported(small, ViewConfig(size=64))
    assert not fused_views_supported(torch.zeros(2, 3, 96, 96, dtype=torch.uint8), ViewConfig(size=64))
    assert not fused_views_supported(small, ViewConfig(size=96))
    assert not fused_views_supported(small, ViewConfig(size=8, blur_kernel=23))  # reflection needs radius < side


@pytest.mark.slow
def test_largest_tiles_match_the_pipeline():
    images, sizes = square_batch(n=2, side=64)
    assert_same_views([dataclasses.replace(EVERY_OP, size=64), ViewConfig(size=64)], images, sizes)
    assert_same_views([dataclasses.replace(EVERY_OP, size=48, grayscale_p=0.0)] * 2, images, sizes)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_cifar_batch_on_the_gpu(out_dtype):
    images, sizes = square_batch(n=256, side=32, device="cuda")
    tolerance = {"atol": 1e-4} if out_dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}
    assert_same_views([ViewConfig()] * 2, images, sizes, out_dtype=out_dtype, **tolerance)
