"""The batched augmentation ops against torchvision, op by op, on the same parameters.

Every op is checked on single images against ``torchvision.transforms.v2.functional``;
the sampling is checked for its ranges, per-image randomness, application frequencies
(5-sigma binomial bounds) and determinism for a fixed generator.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import RandomResizedCrop as TorchvisionRandomResizedCrop

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipelines.augment import (  # noqa: E402
    ColorJitter,
    CropParams,
    GaussianBlur,
    JitterParams,
    Normalize,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomSolarize,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    rgb_to_grayscale,
)

ATOL = 1e-5  # float32 round-off; both sides compute the same formulas in another order


def images(n: int, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    """Float N×3×H×W in [0, 1], with exact 0s, 1s and ties between channels mixed in."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, height, width, generator=g)
    levels = torch.randint(0, 5, (n, 3, height, width), generator=g) / 4  # ties, 0 and 1
    use_levels = torch.rand(n, 1, height, width, generator=g) < 0.2
    return torch.where(use_levels, levels, x)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


# --- resized crop -----------------------------------------------------------------------

CROPS = [
    # source height, width, box (top, left, height, width), output size
    (64, 64, (2, 5, 60, 50), 32),  # downscale, both axes
    (64, 64, (0, 0, 64, 64), 32),  # whole image, exact 2× downscale
    (32, 32, (0, 0, 32, 32), 32),  # identity
    (32, 32, (3, 4, 10, 12), 32),  # upscale
    (32, 32, (31, 31, 1, 1), 32),  # a single pixel
    (32, 32, (0, 7, 32, 9), 32),  # upscale one axis, keep the other
    (48, 40, (5, 1, 41, 23), 24),  # non-square source, downscale h, upscale w
    (96, 80, (10, 3, 86, 77), 16),  # strong downscale
    (20, 28, (1, 2, 17, 25), 64),  # strong upscale
]


@pytest.mark.parametrize("height, width, box, size", CROPS)
def test_resized_crop_matches_torchvision(height, width, box, size):
    image = images(1, height, width, seed=height + width)[0]
    top, left, h, w = box
    expected = F.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    actual = RandomResizedCrop(size)(image[None], CropParams(torch.tensor([box])))
    assert actual.shape == (1, 3, size, size)
    assert_close(actual[0], expected)


def test_resized_crop_uint8_matches_torchvision():
    g = generator(1)
    source = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)
    for box, size in [((2, 5, 60, 50), 32), ((3, 4, 10, 12), 32), ((0, 0, 64, 64), 64)]:
        actual = RandomResizedCrop(size)(source[None], CropParams(torch.tensor([box])))
        assert actual.dtype == torch.float32
        # The uint8 input is scaled to [0, 1] inside the op: same as cropping the floats.
        expected = F.resized_crop(source.float() / 255, *box, [size, size], antialias=True)
        assert_close(actual[0], expected)
        # torchvision's own uint8 path rounds its result to integers (and uses fixed-point
        # weights), hence one grey level of tolerance.
        rounded = F.resized_crop(source, *box, [size, size], antialias=True)
        assert_close(actual[0], rounded.float() / 255, atol=1 / 255 + 1e-6)


def test_resized_crop_batch_each_image_its_box():
    source = images(4, 48, 40, seed=2)
    boxes = torch.tensor([[0, 0, 48, 40], [5, 1, 41, 23], [3, 4, 10, 12], [20, 10, 28, 30]])
    actual = RandomResizedCrop(32)(source, CropParams(boxes))
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        expected = F.resized_crop(source[i], top, left, h, w, [32, 32], antialias=True)
        assert_close(actual[i], expected)


def test_resized_crop_channels_last_input():
    source = images(3, 40, 40, seed=3)
    boxes = torch.tensor([[0, 0, 40, 40], [5, 1, 30, 23], [3, 4, 10, 12]])
    crop = RandomResizedCrop(32)
    expected = crop(source, CropParams(boxes))
    actual = crop(source.contiguous(memory_format=torch.channels_last), CropParams(boxes))
    assert_close(actual, expected)


def test_padded_batch_matches_unpadded_images():
    g = generator(4)
    sizes = torch.tensor([[32, 32], [20, 28], [40, 24], [7, 9]])
    padded = torch.randint(0, 256, (4, 3, 40, 32), dtype=torch.uint8, generator=g)  # pad = noise
    crop = RandomResizedCrop(24, scale=(0.08, 1.0))
    params = crop.sample(4, g, sizes)
    actual = crop(padded, params)
    for i, (h, w) in enumerate(sizes.tolist()):
        alone = padded[i : i + 1, :, :h, :w]
        expected = crop(alone, CropParams(params.boxes[i : i + 1]))
        assert_close(actual[i : i + 1], expected)
        top, left, bh, bw = params.boxes[i].tolist()
        reference = F.resized_crop(alone[0].float() / 255, top, left, bh, bw, [24, 24], antialias=True)
        assert_close(actual[i], reference)


def test_crop_sample_boxes_inside_and_in_range():
    n = 20000
    scale, ratio = (0.2, 1.0), (3 / 4, 4 / 3)
    g = generator(5)
    sizes = torch.stack([torch.randint(8, 65, (n,), generator=g), torch.randint(8, 65, (n,), generator=g)], 1)
    boxes = RandomResizedCrop(32, scale, ratio).sample(n, g, sizes).boxes
    assert boxes.shape == (n, 4) and boxes.dtype == torch.int64
    top, left, h, w = boxes.unbind(1)
    height, width = sizes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (h > 0).all() and (w > 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    # Sides are rounded to whole pixels: allow half a pixel on each side. The centre
    # fallback is the whole image where its aspect is in range, else it may be smaller.
    area = (height * width).double()
    hf, wf = h.double(), w.double()
    square_ish = (width / height >= ratio[0]) & (width / height <= ratio[1])
    assert ((hf + 0.5) * (wf + 0.5) >= scale[0] * area)[square_ish].all()
    assert ((hf - 0.5) * (wf - 0.5) <= scale[1] * area).all()
    assert ((wf + 0.5) / (hf - 0.5).clamp(min=1e-9) >= ratio[0]).all()
    assert ((wf - 0.5) / (hf + 0.5) <= ratio[1]).all()


def test_crop_sample_distribution_matches_torchvision():
    """Mean area fraction, log aspect and position of ours and torchvision's get_params."""
    n, height, width = 20000, 32, 32
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)  # small scales: many tries fail for wide crops
    ours = RandomResizedCrop(32, scale, ratio).sample(n, generator(6), torch.tensor([[height, width]]).expand(n, 2))
    torch.manual_seed(6)
    image = torch.empty(1, height, width)
    theirs = torch.tensor([TorchvisionRandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)])
    for boxes_a, boxes_b in [(ours.boxes, theirs)]:
        for statistic in (
            lambda b: b[:, 2] * b[:, 3] / (height * width),
            lambda b: torch.log(b[:, 3] / b[:, 2]),
            lambda b: (b[:, 0] + b[:, 2] / 2) / height,
            lambda b: (b[:, 1] + b[:, 3] / 2) / width,
        ):
            a, b = statistic(boxes_a.double()), statistic(boxes_b.double())
            sigma = math.sqrt((a.var() + b.var()) / n)
            assert abs(a.mean() - b.mean()) < 5 * sigma


@pytest.mark.parametrize("height, width", [(32, 32), (20, 40), (40, 20), (13, 7)])
def test_crop_falls_back_to_the_centre(height, width):
    scale, ratio = (2.0, 3.0), (3 / 4, 4 / 3)  # no crop of 2–3× the area fits
    sizes = torch.tensor([[height, width]]).expand(5, 2)
    boxes = RandomResizedCrop(32, scale, ratio).sample(5, generator(7), sizes).boxes
    expected = TorchvisionRandomResizedCrop.get_params(torch.empty(1, height, width), list(scale), list(ratio))
    assert boxes.tolist() == [list(expected)] * 5


def test_crop_sample_per_image_and_deterministic():
    sizes = torch.tensor([[32, 32]]).expand(64, 2)
    crop = RandomResizedCrop(32, (0.2, 1.0))
    boxes = crop.sample(64, generator(8), sizes).boxes
    assert len({tuple(b) for b in boxes.tolist()}) > 48
    assert torch.equal(boxes, crop.sample(64, generator(8), sizes).boxes)
    assert not torch.equal(boxes, crop.sample(64, generator(9), sizes).boxes)


# --- flip ---------------------------------------------------------------------------------


def test_flip_matches_torchvision():
    source = images(6, 20, 24, seed=10)
    flip = torch.tensor([True, False, True, True, False, False])
    actual = RandomHorizontalFlip()(source, flip)
    for i in range(6):
        expected = F.horizontal_flip(source[i]) if flip[i] else source[i]
        assert torch.equal(actual[i], expected)


# --- colour ---------------------------------------------------------------------------------


def factors(n: int, low: float, high: float, seed: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator(seed))


@pytest.mark.parametrize(
    "ours, theirs, low, high",
    [
        (adjust_brightness, F.adjust_brightness, 0.0, 2.0),
        (adjust_contrast, F.adjust_contrast, 0.0, 2.0),
        (adjust_saturation, F.adjust_saturation, 0.0, 2.0),
        (adjust_hue, F.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_adjustments_match_torchvision(ours, theirs, low, high):
    source = images(16, 16, 12, seed=11)
    amounts = factors(16, low, high, seed=12)
    amounts[:2] = torch.tensor([low, high])  # the ends of the range (hue ±0.5: a half turn)
    actual = ours(source, amounts)
    for i in range(16):
        assert_close(actual[i], theirs(source[i], amounts[i].item()))


def test_hue_of_grey_and_pure_colours():
    pixels = torch.tensor(
        [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]]
    )
    source = pixels.T.reshape(1, 3, 3, 3)
    for shift in (-0.5, -0.1, 0.0, 0.05, 1 / 6, 0.5):
        actual = adjust_hue(source, torch.tensor([shift]))
        assert_close(actual[0], F.adjust_hue(source[0], shift))


def test_grayscale_matches_torchvision():
    source = images(4, 16, 16, seed=13)
    assert_close(rgb_to_grayscale(source)[1], F.rgb_to_grayscale(source[1]))
    applied = torch.tensor([True, False, False, True])
    actual = RandomGrayscale(0.2)(source, applied)
    for i in range(4):
        expected = F.rgb_to_grayscale(source[i], num_output_channels=3) if applied[i] else source[i]
        assert_close(actual[i], expected)


TORCHVISION_JITTER = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)


def torchvision_jitter(image: torch.Tensor, params: JitterParams, i: int) -> torch.Tensor:
    if not params.applied[i]:
        return image
    for op in params.order[i].tolist():
        image = TORCHVISION_JITTER[op](image, params.factors[i, op].item())
    return image


@pytest.mark.parametrize("strengths", [(0.4, 0.4, 0.4, 0.1), (0.8, 0.8, 0.8, 0.2), (0.4, 0.0, 0.4, 0.0)])
def test_color_jitter_matches_torchvision_in_each_order(strengths):
    n = 48
    source = images(n, 12, 12, seed=14)
    jitter = ColorJitter(*strengths, p=0.8)
    params = jitter.sample(n, generator(15))
    actual = jitter(source, params)
    for i in range(n):
        assert_close(actual[i], torchvision_jitter(source[i], params, i))


def test_color_jitter_params_in_range_and_per_image():
    n = 20000
    params = ColorJitter(0.4, 0.3, 0.2, 0.1).sample(n, generator(16))
    b, c, s, h = params.factors.unbind(1)
    for values, low, high in [(b, 0.6, 1.4), (c, 0.7, 1.3), (s, 0.8, 1.2), (h, -0.1, 0.1)]:
        assert values.min() >= low and values.max() <= high
        assert values.unique().numel() > n * 0.99  # a fresh draw per image
    assert torch.equal(params.order.sort(1).values, torch.arange(4).expand(n, 4))
    # Each adjustment comes first in a quarter of the images.
    counts = torch.bincount(params.order[:, 0], minlength=4).double()
    assert (abs(counts - n / 4) < 5 * math.sqrt(n * 0.25 * 0.75)).all()
    assert len({tuple(o) for o in params.order[:64].tolist()}) > 12


def test_color_jitter_clamps_to_unit_range():
    source = images(32, 8, 8, seed=17)
    jitter = ColorJitter(0.9, 0.9, 0.9, 0.5)
    out = jitter(source, jitter.sample(32, generator(18)))
    assert out.min() >= 0 and out.max() <= 1


# --- blur, solarize, normalize ---------------------------------------------------------------


@pytest.mark.parametrize("height, width, kernel", [(32, 32, 13), (32, 32, 3), (24, 40, 9), (7, 9, 13)])
def test_gaussian_blur_matches_torchvision(height, width, kernel):
    source = images(5, height, width, seed=height * width)
    if kernel // 2 >= min(height, width):
        with pytest.raises(ValueError):
            GaussianBlur(kernel, (0.1, 2.0))(source, torch.ones(5))
        return
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 0.0])  # 0: not applied
    actual = GaussianBlur(kernel, (0.1, 2.0))(source, sigma)
    for i in range(4):
        expected = F.gaussian_blur(source[i], [kernel, kernel], [sigma[i].item()] * 2)
        assert_close(actual[i], expected)
    assert_close(actual[4], source[4], atol=0)


def test_solarize_matches_torchvision():
    source = images(4, 16, 16, seed=19)
    applied = torch.tensor([True, False, True, True])
    for threshold in (0.5, 0.25, 1.0):
        actual = RandomSolarize(threshold, 0.5)(source, applied)
        for i in range(4):
            expected = F.solarize(source[i], threshold) if applied[i] else source[i]
            assert torch.equal(actual[i], expected)


def test_normalize_matches_torchvision():
    source = images(4, 16, 16, seed=20)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    expected = F.normalize(source, list(mean), list(std))
    for inplace in (False, True):
        out = Normalize(mean, std)(source.clone(), inplace=inplace)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert_close(out, expected)


# --- sampling: frequencies, per-image draws, determinism ---------------------------------------


def assert_frequency(applied: torch.Tensor, p: float) -> None:
    n = applied.numel()
    count = applied.sum().item()
    assert abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1e-9, (count, n, p)


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_application_frequencies(p):
    n = 20000
    assert_frequency(RandomHorizontalFlip(p).sample(n, generator(21)), p)
    assert_frequency(ColorJitter(0.4, 0.4, 0.4, 0.1, p=p).sample(n, generator(22)).applied, p)
    assert_frequency(RandomGrayscale(p).sample(n, generator(23)), p)
    sigma = GaussianBlur(13, (0.1, 2.0), p=p).sample(n, generator(24))
    assert_frequency(sigma > 0, p)
    assert ((sigma == 0) | ((sigma >= 0.1) & (sigma <= 2.0))).all()
    assert_frequency(RandomSolarize(0.5, p).sample(n, generator(25)), p)


OPS = [
    RandomHorizontalFlip(0.5),
    ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
    RandomGrayscale(0.5),
    GaussianBlur(13, (0.1, 2.0), p=0.5),
    RandomSolarize(0.5, 0.5),
]


def as_tensors(params) -> list[torch.Tensor]:
    """The random parameters (not the per-image record of which adjustments are enabled)."""
    if isinstance(params, torch.Tensor):
        return [params]
    return [value for name, value in vars(params).items() if name != "enabled"]


@pytest.mark.parametrize("op", OPS, ids=lambda op: type(op).__name__)
def test_sampling_is_deterministic_and_per_image(op):
    n = 64
    first, again, other = (as_tensors(op.sample(n, generator(seed))) for seed in (30, 30, 31))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    # Within one batch, images get different parameters.
    assert all(t.reshape(n, -1).unique(dim=0).shape[0] > 1 for t in first)


@pytest.mark.parametrize("op", OPS, ids=lambda op: type(op).__name__)
def test_outputs_deterministic_for_a_seed(op):
    source = images(16, 16, 16, seed=32)
    first = op(source, op.sample(16, generator(33)))
    assert torch.equal(first, op(source, op.sample(16, generator(33))))
    assert not torch.equal(first, op(source, op.sample(16, generator(34))))


@pytest.mark.parametrize("op", OPS, ids=lambda op: type(op).__name__)
@pytest.mark.parametrize("chosen", ["some", "all", "none"])
def test_inplace_and_out_of_place_agree(op, chosen):
    n = 16
    source = images(n, 16, 16, seed=35)
    params = op.sample(n, generator(36))
    if chosen != "some":  # every image (or none) drawing the op
        full = ColorJitter(0.4, 0.4, 0.4, 0.1).sample(n, generator(36)) if isinstance(op, ColorJitter) else None
        if isinstance(op, ColorJitter):
            params = JitterParams(full.factors, full.order, full.applied.fill_(chosen == "all"), full.enabled)
        elif isinstance(op, GaussianBlur):
            params = torch.full((n,), 1.0 if chosen == "all" else 0.0)
        else:
            params = torch.full((n,), chosen == "all")
    before = source.clone()
    out = op(source, params)
    assert torch.equal(source, before)  # out of place leaves its input alone
    inplace = op(source.clone(), params, inplace=True)
    assert torch.equal(inplace, out)
    for result in (out, inplace):  # dense: the next op of a pipeline may write into it
        result.mul_(1.0)  # raises where elements share memory (an expanded tensor)
