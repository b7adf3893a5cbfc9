"""Batched augmentation ops with per-image random parameters.

Every op has the same two-step contract:

    params = op.sample(n, generator)        # one set of parameters per image, on the CPU
    images = op(images, params)             # applied to the whole batch on its device

Parameters are drawn on the CPU from an explicit ``torch.Generator``, so a seed gives the
same views on any device, the host knows them without a device synchronisation, and the
small parameter tensors are sent to the device asynchronously.

Images are float N×3×H×W in [0, 1] (any memory format), except ``RandomResizedCrop``,
which also takes uint8 input, a padded batch of variable-size images with per-image
``sizes`` (N×2: height, width), and does the uint8→float conversion for free.

The semantics follow torchvision's transforms (checked op by op in the tests):
RandomResizedCrop's ten tries with centre fallback and antialiased bilinear resampling,
ColorJitter's random order of its four adjustments per image, RandomGrayscale,
GaussianBlur with reflect padding and RandomSolarize. Results agree with torchvision's
to float32 round-off (1e-5); the only deliberate deviation is that a uint8 crop is not
rounded back to integers (torchvision's uint8 path returns uint8).

How the work is batched, since every image has its own parameters:

* Resampling and blurring are per-image matrices applied from both sides
  (``W_y @ image @ W_xᵀ``), two batched matrix products per op on CPU and GPU alike,
  with crop, antialiasing, reflect padding, a horizontal flip and the uint8 scaling
  folded into the matrices.
* Brightness, contrast, saturation, grayscale and normalisation are per-image affine
  colour maps (3×3 matrix plus offset, then torchvision's clamp where it has one), one
  batched product for the whole batch; images that skip the step get the identity.
* Hue, which is not affine, and blur run only on the images that draw them: the index
  lists come from the CPU-side parameters, so no device synchronisation is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    return t.to(device, non_blocking=True)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _bernoulli(n: int, p: float, generator: torch.Generator) -> Tensor:
    return torch.rand(n, generator=generator) < p


def _apply_matrices(images: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``rows @ image @ colsᵀ`` for every image and channel: N×C×H×W → N×C×h×w.

    Two batched products: the columns first, with each image's channels and rows stacked
    into one (C·H)×W matrix, then the rows, shared by the channels.
    """
    n, c, h, w = images.shape
    across = torch.bmm(images.reshape(n, c * h, w), cols.transpose(1, 2))  # N×(C·H)×w'
    return rows.unsqueeze(1) @ across.view(n, c, h, -1)


def _colour_map(images: Tensor, matrix: Tensor, offset: Tensor, channels_last: bool = False) -> Tensor:
    """``matrix @ pixel + offset`` for every pixel, per image (N×3×3, N×3).

    ``channels_last`` computes the transposed product, whose result is already in
    channels-last memory (what a convolutional backbone wants), at no extra pass.
    """
    n, c, h, w = images.shape
    flat = images.reshape(n, c, h * w)
    if channels_last:
        out = torch.baddbmm(offset.unsqueeze(1), flat.transpose(1, 2), matrix.transpose(1, 2))
        return out.view(n, h, w, c).permute(0, 3, 1, 2)  # N×HW×C memory = channels-last
    return torch.baddbmm(offset.unsqueeze(2), matrix, flat).view(n, c, h, w)


def _subset(images: Tensor, chosen: Tensor, op, *args: Tensor) -> Tensor:
    """``op`` applied to the images where ``chosen`` (N bool, CPU); the rest pass through.

    ``args`` are per-image parameters (already on the device); the selection happens on
    the device with an index built on the CPU.
    """
    if not chosen.any():
        return images
    if chosen.all():
        return op(images, *args)
    index = _to_device(chosen.nonzero().squeeze(1), images.device)
    done = op(images.index_select(0, index), *(a.index_select(0, index) for a in args))
    return images.index_copy(0, index, done)


def resample_matrix(start: Tensor, length: Tensor, in_size: int, out_size: int) -> Tensor:
    """Antialiased bilinear resampling of the segment [start, start+length) to out_size.

    Returns N×out_size×in_size weights. This is PyTorch's ``interpolate(mode="bilinear",
    antialias=True, align_corners=False)`` on the cropped segment (the PIL filter): a
    triangle kernel widened by the scale when downscaling, cut at the crop border and
    renormalised — which for upscaling equals plain bilinear with edge clamping.
    """
    start, length = start.float(), length.float()
    scale = length / out_size
    support = scale.clamp(min=1.0)
    device = start.device
    centre = scale[:, None] * (torch.arange(out_size, device=device) + 0.5)
    source = torch.arange(in_size, device=device)[None, None, :] - start[:, None, None]
    distance = (source + 0.5 - centre[:, :, None]) / support[:, None, None]
    inside = (source >= 0) & (source < length[:, None, None])
    weights = (1 - distance.abs()).clamp(min=0) * inside
    return weights / weights.sum(-1, keepdim=True)


@dataclass
class CropParams:
    boxes: Tensor  # N×4 int64: top, left, height, width in source pixels


class RandomResizedCrop:
    """torchvision ``RandomResizedCrop`` (bilinear, antialias) for a batch.

    Ten tries per image of (area ∈ scale, log-uniform aspect ∈ ratio), the first that fits
    wins, else the centre crop clamped to the ratio range — as torchvision's get_params.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        self.size, self.scale, self.ratio = size, scale, ratio

    def sample(self, n: int, generator: torch.Generator, sizes: Tensor) -> CropParams:
        """``sizes``: N×2 (height, width) of each source image, on the CPU."""
        tries = 10
        height, width = sizes[:, :1].float(), sizes[:, 1:].float()
        area = height * width * _uniform(n * tries, *self.scale, generator).view(n, tries)
        log_ratio = _uniform(n * tries, math.log(self.ratio[0]), math.log(self.ratio[1]), generator)
        aspect = torch.exp(log_ratio).view(n, tries)
        w = torch.round(torch.sqrt(area * aspect))
        h = torch.round(torch.sqrt(area / aspect))
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = fits.float().argmax(1, keepdim=True)  # first try that fits (0 when none)
        found = fits.any(1)
        h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)

        # Centre fallback: the whole image, clamped to the aspect-ratio range.
        height, width = height.squeeze(1), width.squeeze(1)
        in_ratio = width / height
        fall_w = torch.where(
            in_ratio > self.ratio[1], torch.round(height * self.ratio[1]), width
        )
        fall_h = torch.where(
            in_ratio < self.ratio[0], torch.round(width / self.ratio[0]), height
        )
        h = torch.where(found, h, fall_h)
        w = torch.where(found, w, fall_w)
        top_random = torch.floor(torch.rand(n, generator=generator) * (height - h + 1))
        left_random = torch.floor(torch.rand(n, generator=generator) * (width - w + 1))
        top = torch.where(found, top_random, torch.div(height - h, 2, rounding_mode="floor"))
        left = torch.where(found, left_random, torch.div(width - w, 2, rounding_mode="floor"))
        return CropParams(torch.stack([top, left, h, w], 1).long())

    def __call__(self, images: Tensor, params: CropParams, flip: Tensor | None = None) -> Tensor:
        """Crop and resize; ``flip`` (N bool, optional) also mirrors the chosen images,
        as ``RandomHorizontalFlip`` after the crop would, at no extra cost."""
        boxes = _to_device(params.boxes, images.device)
        rows = resample_matrix(boxes[:, 0], boxes[:, 2], images.shape[-2], self.size)
        cols = resample_matrix(boxes[:, 1], boxes[:, 3], images.shape[-1], self.size)
        if flip is not None:
            flip = _to_device(flip, images.device)[:, None, None]
            cols = torch.where(flip, cols.flip(1), cols)  # output column x reads column s−1−x
        if images.dtype == torch.uint8:
            rows = rows / 255.0  # uint8 → [0, 1] folded into the weights
        images = images.to(torch.float32, memory_format=torch.contiguous_format)
        return _apply_matrices(images, rows, cols)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return _bernoulli(n, self.p, generator)

    def __call__(self, images: Tensor, flip: Tensor) -> Tensor:
        flip = _to_device(flip, images.device)[:, None, None, None]
        return torch.where(flip, images.flip(-1), images)


LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2, torchvision's weights


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma, as torchvision: N×3×H×W → N×1×H×W."""
    r, g, b = images.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _gray_matrix(device: torch.device) -> Tensor:
    """3×3 matrix whose every row is the luma weights: pixel → its gray in each channel."""
    return torch.tensor(LUMA, device=device).expand(3, 3)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    factor = factor[:, None, None, None]
    return (factor * images + (1 - factor) * other).clamp(0, 1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    return (images * factor[:, None, None, None]).clamp(0, 1)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    mean = rgb_to_grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(images, rgb_to_grayscale(images), factor)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by ``shift`` turns (torchvision's HSV round trip, in closed form).

    The rotation keeps each pixel's maximum (value) and chroma; only where the colour
    sits on the hexagonal hue circle moves.
    """
    r, g, b = images.unbind(1)
    value = images.amax(1)
    chroma = value - images.amin(1)
    # Hue in sixths of a turn, in [-1, 5); ties go to red, then green, as in torchvision.
    # A grey pixel (chroma 0) has all differences 0, hence hue 0.
    red, green = value == r, value == g
    difference = torch.where(red, g - b, torch.where(green, b - r, r - g))
    sector = torch.where(red, 0.0, torch.where(green, 2.0, 4.0))
    hue = difference / chroma.clamp(min=torch.finfo(chroma.dtype).tiny) + sector
    hue += 6.0 * shift[:, None, None]
    # hsv→rgb without branches: channel c is value − chroma·clamp(2 − |k − 2|, 0, 1),
    # k = (n + hue) mod 6 with n = 5, 3, 1 for red, green, blue.
    n = torch.tensor([5.0, 3.0, 1.0], device=images.device)[None, :, None, None]
    ramp = torch.remainder(hue.unsqueeze(1) + n, 6.0).sub_(2.0).abs_().neg_().add_(2.0).clamp_(0, 1)
    return torch.addcmul(value.unsqueeze(1), chroma.unsqueeze(1), ramp, value=-1.0)


@dataclass
class JitterParams:
    factors: Tensor  # N×4: brightness, contrast, saturation (multipliers), hue (turns)
    order: Tensor  # N×4: a permutation of 0..3 per image
    applied: Tensor  # N bool


BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


class ColorJitter:
    """``RandomApply(ColorJitter(b, c, s, h), p)``: each image its own factors and order.

    At each of the four positions of the per-image order, the images whose adjustment
    there is brightness, contrast or saturation get it as one batched affine colour map
    (``clamp(M·pixel + t, 0, 1)``, the identity for the others), then the images whose
    adjustment is hue get it on their own.
    """

    def __init__(
        self,
        brightness: float,
        contrast: float,
        saturation: float,
        hue: float,
        p: float = 1.0,
    ) -> None:
        self.strengths = (brightness, contrast, saturation)
        self.hue, self.p = hue, p
        self.enabled = torch.tensor([s != 0 for s in (brightness, contrast, saturation, hue)])

    def sample(self, n: int, generator: torch.Generator) -> JitterParams:
        applied = _bernoulli(n, self.p, generator)
        order = torch.argsort(torch.rand(n, 4, generator=generator), dim=1)
        factors = [_uniform(n, max(0.0, 1 - s), 1 + s, generator) for s in self.strengths]
        factors.append(_uniform(n, -self.hue, self.hue, generator))
        return JitterParams(torch.stack(factors, 1), order, applied)

    def __call__(self, images: Tensor, params: JitterParams) -> Tensor:
        device = images.device
        shift = _to_device(params.factors[:, HUE], device)
        for position in range(4):
            op = params.order[:, position]
            active = params.applied & self.enabled[op]
            linear = active & (op != HUE)
            if linear.any():
                images = self._linear(images, op, params.factors, linear)
            images = _subset(images, active & (op == HUE), adjust_hue, shift)
        return images

    @staticmethod
    def _linear(images: Tensor, op: Tensor, factors: Tensor, chosen: Tensor) -> Tensor:
        """Brightness, contrast or saturation per image as ``clamp(M·pixel + t, 0, 1)``.

        brightness f: M = f·I; saturation f: M = f·I + (1 − f)·gray; contrast f:
        M = f·I, t = (1 − f)·mean gray of the image (torchvision's blends). Coefficients
        are built on the CPU from the CPU-side parameters.
        """
        factor = factors.gather(1, op.clamp(max=SATURATION)[:, None]).squeeze(1)
        scale = torch.where(chosen, factor, torch.ones(()))
        gray_weight = torch.where(chosen & (op == SATURATION), 1 - factor, torch.zeros(()))
        mean_weight = torch.where(chosen & (op == CONTRAST), 1 - factor, torch.zeros(()))
        scale, gray_weight, mean_weight = (_to_device(t, images.device) for t in (scale, gray_weight, mean_weight))
        eye = torch.eye(3, device=images.device)
        gray = _gray_matrix(images.device)
        matrix = scale[:, None, None] * eye + gray_weight[:, None, None] * gray
        offset = torch.zeros(images.shape[0], 3, device=images.device)
        if (chosen & (op == CONTRAST)).any():
            mean_gray = images.mean(dim=(2, 3)) @ gray[0]  # the mean of the gray image
            offset = (mean_weight * mean_gray)[:, None].expand(-1, 3)
        return _colour_map(images, matrix, offset).clamp_(0, 1)


class RandomGrayscale:
    def __init__(self, p: float = 0.1) -> None:
        self.p = p

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return _bernoulli(n, self.p, generator)

    def __call__(self, images: Tensor, applied: Tensor) -> Tensor:
        matrix = _grayscale_matrices(applied, images.device)
        return _colour_map(images, matrix, torch.zeros(images.shape[0], 3, device=images.device))


def _grayscale_matrices(applied: Tensor, device: torch.device) -> Tensor:
    """N×3×3: the gray matrix where ``applied`` (N bool), the identity elsewhere."""
    applied = _to_device(applied, device)[:, None, None]
    return torch.where(applied, _gray_matrix(device), torch.eye(3, device=device))


def blur_matrix(sigma: Tensor, size: int, kernel_size: int) -> Tensor:
    """N×size×size matrices applying a 1-D Gaussian with reflect padding.

    Row i holds the kernel centred on pixel i, with the taps that fall outside the image
    folded back onto their reflections (``F.pad(mode="reflect")``). sigma = 0 gives the
    identity, which is how un-blurred images pass through unchanged.
    """
    radius = kernel_size // 2
    if radius >= size:
        raise ValueError(f"blur kernel {kernel_size} too large for {size}-pixel images")
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=sigma.device)
    safe = sigma.clamp(min=1e-6)[:, None]
    kernel = torch.exp(-0.5 * (taps[None] / safe) ** 2)
    kernel = torch.where(sigma[:, None] > 0, kernel, (taps == 0).float()[None])
    kernel = kernel / kernel.sum(1, keepdim=True)  # N×K
    position = torch.arange(size, device=sigma.device)[:, None] + taps.long()[None]
    position = position.abs()  # reflect at the left border
    position = torch.where(position >= size, 2 * (size - 1) - position, position)
    matrix = torch.zeros(sigma.shape[0], size, size, device=sigma.device)
    index = position[None].expand(sigma.shape[0], -1, -1)
    return matrix.scatter_add_(2, index, kernel[:, None, :].expand(-1, size, -1).contiguous())


class GaussianBlur:
    """``RandomApply(GaussianBlur(kernel_size, sigma), p)`` with σ ~ U(sigma) per image."""

    def __init__(self, kernel_size: int, sigma: tuple[float, float], p: float = 1.0) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"blur kernel size must be odd, got {kernel_size}")
        self.kernel_size, self.sigma, self.p = kernel_size, sigma, p

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Per-image σ, 0 where the blur is not applied."""
        applied = _bernoulli(n, self.p, generator)
        sigma = _uniform(n, *self.sigma, generator)
        return torch.where(applied, sigma, torch.zeros(()))

    def __call__(self, images: Tensor, sigma: Tensor) -> Tensor:
        """Blur the images with σ > 0 (``sigma`` on the CPU); the others pass through."""
        return _subset(images, sigma > 0, self._blur, _to_device(sigma, images.device))

    def _blur(self, images: Tensor, sigma: Tensor) -> Tensor:
        rows = blur_matrix(sigma, images.shape[-2], self.kernel_size)
        cols = rows if images.shape[-1] == images.shape[-2] else blur_matrix(
            sigma, images.shape[-1], self.kernel_size
        )
        return _apply_matrices(images, rows, cols)


class RandomSolarize:
    """Invert every pixel at or above ``threshold`` (float images in [0, 1])."""

    def __init__(self, threshold: float = 0.5, p: float = 0.5) -> None:
        self.threshold, self.p = threshold, p

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return _bernoulli(n, self.p, generator)

    def __call__(self, images: Tensor, applied: Tensor) -> Tensor:
        applied = _to_device(applied, images.device)[:, None, None, None]
        return torch.where(applied & (images >= self.threshold), 1.0 - images, images)


class Normalize:
    """``(image − mean) / std`` per channel, returned in channels-last memory.

    ``grayscale`` (N bool, optional) turns the chosen images gray first, in the same
    pass: a view pipeline without solarisation may do its grayscale here, after the blur,
    since both are linear and commute.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean, self.std = mean, std

    def __call__(self, images: Tensor, grayscale: Tensor | None = None) -> Tensor:
        n, device = images.shape[0], images.device
        mean = torch.tensor(self.mean, device=device)
        inverse_std = 1.0 / torch.tensor(self.std, device=device)
        matrix = torch.eye(3, device=device).expand(n, 3, 3)
        if grayscale is not None:
            matrix = _grayscale_matrices(grayscale, device)
        matrix = inverse_std[None, :, None] * matrix
        offset = (-mean * inverse_std).expand(n, 3)
        return _colour_map(images, matrix, offset, channels_last=True)
