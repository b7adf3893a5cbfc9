"""Batched augmentation ops with per-image random parameters.

Every op has the same two-step contract:

    params = op.sample(n, generator)        # one set of parameters per image, on the CPU
    images = op(images, params)             # applied to the whole batch on its device

Parameters are drawn on the CPU from an explicit ``torch.Generator``, so a seed gives the
same views on any device, the host knows them without a device synchronisation, and the
small parameter tensors are sent to the device asynchronously.

Images are float N×3×H×W in [0, 1] (any memory format), except ``RandomResizedCrop``,
which also takes uint8 input, a padded batch of variable-size images with per-image
``sizes`` (N×2: height, width), converts uint8 to float in the pass that lays the
batch out for its matrix products, and can fold a horizontal flip into its matrices.

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
* Brightness, contrast and saturation are per-image affine colour maps
  (``clamp(f·pixel + (1 − f)·reference, 0, 1)`` with reference 0, the mean gray or the
  gray pixel), one pass over the whole batch per position of the random order; images
  that skip the step get the identity (f = 1).
* Hue, grayscale, blur, flip and solarize run only on the images that draw them: the
  index lists come from the CPU-side parameters, so no device synchronisation is needed.
* Ops take ``inplace=True`` where the caller owns the batch (a view pipeline's
  intermediate results): fresh full-batch tensors cost page faults on CPU.
* Per-pixel work is plain float arithmetic (min, max, clamp, floor, multiply-add):
  comparisons, ``where`` and ``remainder`` are several times slower on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    return t.to(device, non_blocking=True)


def _constant(values: tuple[float, ...], device: torch.device) -> Tensor:
    """A small float tensor made on the CPU and sent without waiting for the device."""
    return _to_device(torch.tensor(values, dtype=torch.float32), device)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _bernoulli(n: int, p: float, generator: torch.Generator) -> Tensor:
    return torch.rand(n, generator=generator) < p


def _apply_matrices(images: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``rows @ image @ colsᵀ`` for every image and channel: N×C×H×W → N×C×h×w.

    Works in "NHCW" memory, each image row holding its channels' rows side by side, where
    both steps are plain batched products without copies: the columns of the N×(H·C)×W
    matrix, then the rows of the N×H×(C·w) one. The result keeps that memory layout.
    """
    n, c, h, w = images.shape
    stacked = images.permute(0, 2, 1, 3).reshape(n, h * c, w)  # a copy unless NHCW already
    across = torch.bmm(stacked, cols.transpose(1, 2))  # N×(H·C)×w'
    out = torch.bmm(rows, across.view(n, h, -1))  # N×h'×(C·w')
    return out.view(n, rows.shape[1], c, -1).permute(0, 2, 1, 3)


def _per_image(values: Tensor) -> Tensor:
    """N values → N×1×1×1, to broadcast over an N×C×H×W batch."""
    return values[:, None, None, None]


def _subset(images: Tensor, chosen: Tensor, op, *args: Tensor, inplace: bool = False) -> Tensor:
    """``op(images, *args)`` on the images where ``chosen`` (N bool, on the CPU); the
    others pass through. ``args`` are per-image parameters, already on the device;
    ``inplace`` lets it write into ``images`` (use the returned tensor either way)."""
    if not chosen.any():
        return images
    if chosen.all():
        return op(images, *args)
    index = _to_device(chosen.nonzero().squeeze(1), images.device)
    done = op(images.index_select(0, index), *(a.index_select(0, index) for a in args))
    return images.index_copy_(0, index, done) if inplace else images.index_copy(0, index, done)


def resample_matrix(
    start: Tensor, length: Tensor, in_size: int, out_size: int, reverse: Tensor | None = None
) -> Tensor:
    """Antialiased bilinear resampling of the segment [start, start+length) to out_size.

    Returns N×out_size×in_size weights. This is PyTorch's ``interpolate(mode="bilinear",
    antialias=True, align_corners=False)`` on the cropped segment (the PIL filter): a
    triangle kernel widened by the scale when downscaling, cut at the crop border and
    renormalised — which for upscaling equals plain bilinear with edge clamping.
    ``reverse`` (N bool) mirrors the output of the chosen images (a horizontal flip).
    """
    device = start.device
    start, length = start.float(), length.float()
    scale = length / out_size
    inverse_support = 1 / scale.clamp(min=1.0)
    # Source pixels relative to the crop; 1 inside it, 0 outside (integers: no comparisons).
    source = torch.arange(in_size, device=device, dtype=torch.float32)[None, :] - start[:, None]
    inside = (source + 1).clamp_(0, 1) * (length[:, None] - source).clamp_(0, 1)  # N×in
    # Output pixel centres, mirrored where reversed: x + ½ ↦ out_size − (x + ½).
    centre = torch.arange(out_size, device=device, dtype=torch.float32)[None, :] + 0.5
    if reverse is not None:
        centre = centre + reverse.float()[:, None] * (out_size - 2 * centre)
    centre = scale[:, None] * centre  # N×out, in source pixels from the crop's start
    distance = (source[:, None, :] + 0.5 - centre[:, :, None]).abs_()
    weights = distance.mul_(inverse_support[:, None, None]).neg_().add_(1).clamp_(min=0)
    weights.mul_(inside[:, None, :])
    return weights.div_(weights.sum(-1, keepdim=True))


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
        fall_w = torch.where(in_ratio > self.ratio[1], torch.round(height * self.ratio[1]), width)
        fall_h = torch.where(in_ratio < self.ratio[0], torch.round(width / self.ratio[0]), height)
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
        device = images.device
        boxes = _to_device(params.boxes, device)
        flip = None if flip is None else _to_device(flip, device)
        rows = resample_matrix(boxes[:, 0], boxes[:, 2], images.shape[-2], self.size)
        cols = resample_matrix(boxes[:, 1], boxes[:, 3], images.shape[-1], self.size, flip)
        if images.dtype == torch.uint8:
            rows = rows / 255.0  # uint8 → [0, 1] folded into the weights
        # To float in the NHCW memory the products want, in one pass; the result back to
        # plain NCHW, where per-channel planes are contiguous for the colour ops.
        rows_first = images.permute(0, 2, 1, 3).to(torch.float32, memory_format=torch.contiguous_format)
        return _apply_matrices(rows_first.permute(0, 2, 1, 3), rows, cols).contiguous()


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return _bernoulli(n, self.p, generator)

    def __call__(self, images: Tensor, flip: Tensor, inplace: bool = False) -> Tensor:
        return _subset(images, flip, lambda chosen: chosen.flip(-1), inplace=inplace)


LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2, torchvision's weights


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma, as torchvision: N×3×H×W → N×1×H×W."""
    r, g, b = images.unbind(1)
    gray = torch.mul(r, LUMA[0]).add_(g, alpha=LUMA[1]).add_(b, alpha=LUMA[2])
    return gray.unsqueeze(1)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    factor = _per_image(factor)
    return (factor * images + (1 - factor) * other).clamp(0, 1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    return (images * _per_image(factor)).clamp(0, 1)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    mean = rgb_to_grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(images, rgb_to_grayscale(images), factor)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by ``shift`` turns (torchvision's HSV round trip, in closed form).

    The rotation keeps each pixel's maximum (value) and chroma and moves the colour
    along the hexagonal hue circle; written without comparisons or ``where``.
    """
    value, minimum = images.amax(1, keepdim=True), images.amin(1, keepdim=True)
    chroma = value - minimum
    # Each channel's place between the minimum (0) and the maximum (1). A grey pixel
    # (chroma 0) gets 0s; its hue is then arbitrary and does not change its colour.
    r, g, b = ((images - minimum) / chroma.clamp(min=torch.finfo(chroma.dtype).tiny)).unbind(1)
    # Which channel is the maximum, ties going to red then green as in torchvision:
    # floor(x) is 1 exactly where x is 1 (the maximum), else 0.
    is_red = torch.floor(r)
    is_green = torch.floor(g) * (1 - is_red)
    is_blue = 1 - is_red - is_green
    # Hue in sixths of a turn: g − b around red (0), 2 + b − r around green, 4 + r − g
    # around blue; then shifted and wrapped into [0, 6).
    hue = is_red * (g - b) + is_green * (2 + b - r) + is_blue * (4 + r - g)
    hue += 6.0 * shift[:, None, None]
    hue -= 6.0 * torch.floor(hue / 6.0)
    # hsv→rgb: channel c is value − chroma·clamp(d − 1, 0, 1), d the distance on the
    # circle from the hue to the channel's own hue (0, 2, 4) = 3 − ||hue − c| − 3|.
    centres = _constant((0.0, 2.0, 4.0), images.device)[None, :, None, None]
    ramp = (hue.unsqueeze(1) - centres).abs_().sub_(3).abs_().neg_().add_(2).clamp_(0, 1)
    return torch.addcmul(value, chroma, ramp, value=-1.0)


@dataclass
class JitterParams:
    factors: Tensor  # N×4: brightness, contrast, saturation (multipliers), hue (turns)
    order: Tensor  # N×4: a permutation of 0..3 per image
    applied: Tensor  # N bool
    enabled: Tensor  # N×4 bool: the adjustment has a non-zero strength for this image


BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


class ColorJitter:
    """``RandomApply(ColorJitter(b, c, s, h), p)``: each image its own factors and order.

    An adjustment of strength 0 is skipped (recorded per image in the parameters, so a
    batch may mix views of different strengths). At each of the four positions of the
    per-image order, the images whose adjustment
    there is brightness, contrast or saturation get it in one pass over the batch
    (the identity for the others), then the images whose adjustment is hue get it on
    their own.
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
        return JitterParams(torch.stack(factors, 1), order, applied, self.enabled.expand(n, 4))

    def __call__(self, images: Tensor, params: JitterParams, inplace: bool = False) -> Tensor:
        """``inplace`` lets the op overwrite ``images`` (dense memory) instead of a copy."""
        images = images if inplace else images.clone()
        shift = _to_device(params.factors[:, HUE], images.device)
        for position in range(4):
            op = params.order[:, position]
            active = params.applied & params.enabled.gather(1, op[:, None]).squeeze(1)
            if (active & (op != HUE)).any():
                _blend_step_(images, op, params.factors, active)
            images = _subset(images, active & (op == HUE), adjust_hue, shift, inplace=True)
        return images


def _blend_step_(images: Tensor, op: Tensor, factors: Tensor, active: Tensor) -> Tensor:
    """Brightness, contrast or saturation, each image its own (``op``, CPU), in one sweep.

    All three are torchvision's ``clamp(f·image + (1 − f)·reference, 0, 1)`` with the
    reference 0, the image's mean gray or its gray pixel; inactive images get f = 1.
    """
    factor = factors.gather(1, op.clamp(max=SATURATION)[:, None]).squeeze(1)
    factor = torch.where(active & (op != HUE), factor, torch.ones(()))
    to_gray = torch.where(op == SATURATION, 1 - factor, torch.zeros(()))
    to_mean = torch.where(op == CONTRAST, 1 - factor, torch.zeros(()))
    factor, to_gray, to_mean = (_per_image(_to_device(t, images.device)) for t in (factor, to_gray, to_mean))
    gray = rgb_to_grayscale(images)
    mean = gray.mean(dim=(2, 3), keepdim=True)
    reference = torch.addcmul(to_mean * mean, gray, to_gray, out=gray)  # shared by the channels
    return torch.addcmul(reference, images, factor, out=images).clamp_(0, 1)


class RandomGrayscale:
    def __init__(self, p: float = 0.1) -> None:
        self.p = p

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return _bernoulli(n, self.p, generator)

    def __call__(self, images: Tensor, applied: Tensor, inplace: bool = False) -> Tensor:
        return _subset(images, applied, self._gray, inplace=inplace)

    @staticmethod
    def _gray(images: Tensor) -> Tensor:
        return rgb_to_grayscale(images).expand_as(images).contiguous()


@functools.lru_cache(maxsize=16)
def _reflect_taps(size: int, kernel_size: int, device: torch.device) -> Tensor:
    """K×(size·size) 0/1: tap t of output pixel i reads pixel j, with reflect padding."""
    radius = kernel_size // 2
    position = torch.arange(size)[None, :] + torch.arange(-radius, radius + 1)[:, None]  # K×size
    position = position.abs()  # reflect at the left border
    position = torch.where(position >= size, 2 * (size - 1) - position, position)
    return _to_device(torch.nn.functional.one_hot(position, size).float().view(kernel_size, -1), device)


def blur_matrix(sigma: Tensor, size: int, kernel_size: int) -> Tensor:
    """N×size×size matrices applying a 1-D Gaussian with reflect padding.

    Row i holds the kernel centred on pixel i, with the taps that fall outside the image
    folded back onto their reflections (``F.pad(mode="reflect")``). sigma = 0 gives the
    identity.
    """
    radius = kernel_size // 2
    if radius >= size:
        raise ValueError(f"blur kernel {kernel_size} too large for {size}-pixel images")
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=sigma.device)
    safe = sigma.clamp(min=1e-6)[:, None]
    kernel = torch.exp(-0.5 * (taps[None] / safe) ** 2)
    kernel = torch.where(sigma[:, None] > 0, kernel, (taps == 0).float()[None])
    kernel = kernel / kernel.sum(1, keepdim=True)  # N×K
    return (kernel @ _reflect_taps(size, kernel_size, sigma.device)).view(-1, size, size)


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

    def __call__(self, images: Tensor, sigma: Tensor, inplace: bool = False) -> Tensor:
        """Blur the images with σ > 0 (``sigma`` on the CPU); the others pass through."""
        sigma_device = _to_device(sigma, images.device)
        return _subset(images, sigma > 0, self._blur, sigma_device, inplace=inplace)

    def _blur(self, images: Tensor, sigma: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        rows = blur_matrix(sigma, height, self.kernel_size)
        cols = rows if width == height else blur_matrix(sigma, width, self.kernel_size)
        return _apply_matrices(images, rows, cols)


class RandomSolarize:
    """Invert every pixel at or above ``threshold`` (float images in [0, 1])."""

    def __init__(self, threshold: float = 0.5, p: float = 0.5) -> None:
        self.threshold, self.p = threshold, p

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return _bernoulli(n, self.p, generator)

    def __call__(self, images: Tensor, applied: Tensor, inplace: bool = False) -> Tensor:
        return _subset(images, applied, self._solarize, inplace=inplace)

    def _solarize(self, images: Tensor) -> Tensor:
        return torch.where(images >= self.threshold, 1.0 - images, images)


class Normalize:
    """``(image − mean) / std`` per channel, returned in channels-last memory (what a
    convolutional backbone wants)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean, self.std = mean, std

    def __call__(self, images: Tensor, inplace: bool = False) -> Tensor:
        device = images.device
        inverse_std = 1.0 / _constant(self.std, device)[None, :, None, None]
        offset = -_constant(self.mean, device)[None, :, None, None] * inverse_std
        images = torch.addcmul(offset, images, inverse_std, out=images if inplace else None)
        return images.contiguous(memory_format=torch.channels_last)


@dataclass
class ViewParams:
    """Every view's random parameters (view-major), drawn on the CPU."""

    crop: CropParams
    flip: Tensor  # (V·N) bool
    jitter: JitterParams
    grayscale: Tensor  # (V·N) bool
    blur_sigma: Tensor  # (V·N) σ in pixels, 0 where not blurred
    solarize: Tensor  # (V·N) bool
    # The geometric ops of pipelines/geometry.py; None: parameters made without them (by hand).
    vflip: Tensor | None = None  # (V·N) bool
    rotate: Tensor | None = None  # (V·N) bool: rotated by 90°
    local_rotation: Tensor | None = None  # (V·N)×2 int64: LoRot-I's quadrant and k, k = 0 where not applied
    region_order: Tensor | None = None  # (V·N)×grid² int64: each region's source region (identity: not applied)

    def take(self, rows: Tensor) -> ViewParams:
        """The parameters of the given rows only (a process's share of a global batch)."""
        return _map_fields(lambda value: value[rows], self)

    @staticmethod
    def concatenate(parts: list[ViewParams]) -> ViewParams:
        """The rows of several parameter sets, one after the other."""
        return _map_fields(torch.cat, *parts)


def _map_fields(function, *values):
    """``function`` over the tensors of (nested dataclasses) ``values``, field by field."""
    if all(value is None for value in values):  # an op the parameters were made without
        return None
    if isinstance(values[0], Tensor):
        return function(values[0]) if len(values) == 1 else function(list(values))
    fields = dataclasses.fields(values[0])
    return type(values[0])(**{f.name: _map_fields(function, *(getattr(v, f.name) for v in values)) for f in fields})
