"""Every augmentation of every view of a batch in one Triton launch (images up to 64 px).

The reference is ``pipelines.views.ViewPipeline.apply``: one batched PyTorch op after
another, each a pass over the whole batch in memory. For CIFAR and Tiny-ImageNet a whole
image fits a register tile, so one program per output view does them all and writes the
view once:

1. crop, resize and flip: ``X ↦ W_y · X · W_xᵀ`` per channel (two ``tl.dot``), the
   triangle-filter weights of ``augment.resample_matrix`` built in registers from the
   view's crop box (antialias support widened by the scale when downscaling, cut at the
   crop border, renormalised; the flip as mirrored output centres; uint8 → [0, 1] folded
   into ``W_y``);
2. ColorJitter's four adjustments in the view's own random order: brightness, contrast
   (mean gray of the whole view by ``tl.sum``) and saturation as
   ``clamp(f·x + (1 − f)·reference, 0, 1)``, hue as ``augment.adjust_hue``'s closed form;
3. grayscale; Gaussian blur as ``B · X · Bᵀ`` with the reflect-padded Gaussian of
   ``augment.blur_matrix``; solarize; normalise;
4. one store in channels-last memory, in the output dtype (bfloat16 for training).

View k of image i is row k·N + i (view-major) and reads source image i of the uint8
N×3×H×W batch (any strides; padded, with per-image sizes: the padding is never read). The
random parameters (``ViewParams``, drawn on the CPU) travel as one (V·N)×22 float table.
Bigger images keep the op-by-op path (``fused_views_supported``).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from pipelines.augment import LUMA, ViewParams
from pipelines.spec import ViewConfig

try:
    import triton
    import triton.language as tl
except ImportError:  # triton ships with CUDA builds of torch; CPU builds keep the op-by-op path
    triton = None

MAX_FUSED_SIDE = 64  # source and view sides that fit one register tile


def _parameter_table(params: ViewParams, sizes: Tensor, count: int) -> Tensor:
    """One row per view: the columns ``_TOP`` … ``_SOURCE_WIDTH`` of the kernel, as floats
    (integers ≤ 2²⁴ are exact), so the parameters reach the device in one copy."""
    jitter = params.jitter
    active = jitter.applied[:, None] & jitter.enabled  # the adjustment runs for this view
    columns = (params.crop.boxes, params.flip[:, None], jitter.factors, jitter.order, active,
               params.grayscale[:, None], params.blur_sigma[:, None], params.solarize[:, None],
               sizes.repeat(count, 1))
    return torch.cat([column.float() for column in columns], 1)


if triton is not None:
    # Columns of the parameter table.
    _TOP, _LEFT, _HEIGHT, _WIDTH = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2), tl.constexpr(3)
    _FLIP = tl.constexpr(4)
    _FACTORS = tl.constexpr(5)  # brightness, contrast, saturation (multipliers), hue (turns)
    _ORDER = tl.constexpr(9)  # the view's permutation of the four adjustments
    _ACTIVE = tl.constexpr(13)  # per adjustment: jitter applied and strength non-zero
    _GRAY, _SIGMA, _SOLARIZE = tl.constexpr(17), tl.constexpr(18), tl.constexpr(19)
    _SOURCE_HEIGHT, _SOURCE_WIDTH = tl.constexpr(20), tl.constexpr(21)
    _COLUMNS = tl.constexpr(22)
    _CONTRAST, _SATURATION, _HUE = tl.constexpr(1), tl.constexpr(2), tl.constexpr(3)
    _RED, _GREEN, _BLUE = tl.constexpr(LUMA[0]), tl.constexpr(LUMA[1]), tl.constexpr(LUMA[2])
    _TINY = tl.constexpr(torch.finfo(torch.float32).tiny)

    @triton.jit
    def _resample_weights(start, length, size, outputs, sources, reverse):
        """``augment.resample_matrix`` for one view: out×in weights (rows past ``size`` 0)."""
        scale = length / size
        inverse_support = 1.0 / tl.maximum(scale, 1.0)
        source = sources.to(tl.float32) - start  # relative to the crop; 1 inside it, 0 outside
        inside = tl.minimum(tl.maximum(source + 1.0, 0.0), 1.0) * tl.minimum(tl.maximum(length - source, 0.0), 1.0)
        centre = outputs.to(tl.float32) + 0.5
        centre = scale * (centre + reverse * (size - 2.0 * centre))  # x + ½ ↦ size − (x + ½) when flipped
        distance = tl.abs(source[None, :] + 0.5 - centre[:, None])
        weights = tl.maximum(1.0 - distance * inverse_support, 0.0) * inside[None, :]
        weights = tl.where(outputs[:, None] < size, weights, 0.0)
        total = tl.sum(weights, 1)
        return weights / tl.where(total > 0.0, total, 1.0)[:, None]

    @triton.jit
    def _both_sides(rows, tile, cols):
        """``rows · tile · colsᵀ``: a separable filter (resampling, blur) on one channel."""
        across = tl.dot(tile, tl.trans(cols), input_precision="ieee")
        return tl.dot(rows, across, input_precision="ieee")

    @triton.jit
    def _resample_channel(PLANE, stride_h, stride_w, height, width, rows, cols,
                          BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
        """One channel of the source image, cropped and resized (the padding is not read)."""
        y = tl.arange(0, BLOCK_H)[:, None]
        x = tl.arange(0, BLOCK_W)[None, :]
        plane = tl.load(PLANE + y * stride_h + x * stride_w, mask=(y < height) & (x < width), other=0).to(tl.float32)
        return _both_sides(rows, plane, cols)

    @triton.jit
    def _gray(red, green, blue):
        return _RED * red + _GREEN * green + _BLUE * blue

    @triton.jit
    def _blend(red, green, blue, adjustment, factor, valid, pixels):
        """Brightness, contrast or saturation: ``clamp(f·x + (1 − f)·reference, 0, 1)`` with
        the reference 0, the view's mean gray or the pixel's gray."""
        gray = _gray(red, green, blue)
        mean = tl.sum(tl.sum(tl.where(valid, gray, 0.0), 1), 0) / pixels
        reference = tl.where(adjustment == _SATURATION, gray, tl.where(adjustment == _CONTRAST, mean, 0.0))
        reference = (1.0 - factor) * reference
        red = tl.minimum(tl.maximum(factor * red + reference, 0.0), 1.0)
        green = tl.minimum(tl.maximum(factor * green + reference, 0.0), 1.0)
        blue = tl.minimum(tl.maximum(factor * blue + reference, 0.0), 1.0)
        return red, green, blue

    @triton.jit
    def _hue_channel(value, chroma, hue, centre):
        """hsv→rgb: value − chroma·clamp(d − 1, 0, 1), d = 3 − ||hue − centre| − 3|."""
        ramp = tl.minimum(tl.maximum(2.0 - tl.abs(tl.abs(hue - centre) - 3.0), 0.0), 1.0)
        return value - chroma * ramp

    @triton.jit
    def _adjust_hue(red, green, blue, shift):
        """``augment.adjust_hue``: rotate the hue by ``shift`` turns keeping value and chroma.
        The maximum channel (ties to red, then green) is found by comparison: exact on a GPU,
        where a float division x/x need not give 1."""
        value = tl.maximum(tl.maximum(red, green), blue)
        minimum = tl.minimum(tl.minimum(red, green), blue)
        chroma = value - minimum
        safe = tl.maximum(chroma, _TINY)
        r, g, b = (red - minimum) / safe, (green - minimum) / safe, (blue - minimum) / safe
        hue = tl.where(red == value, g - b, tl.where(green == value, 2.0 + b - r, 4.0 + r - g))  # sixths of a turn
        hue += 6.0 * shift
        hue -= 6.0 * tl.floor(hue / 6.0)
        return (_hue_channel(value, chroma, hue, 0.0), _hue_channel(value, chroma, hue, 2.0),
                _hue_channel(value, chroma, hue, 4.0))

    @triton.jit
    def _gaussian(taps, sigma, RADIUS: tl.constexpr):
        distance = taps.to(tl.float32) / sigma
        return tl.where(tl.abs(taps) <= RADIUS, tl.exp(-0.5 * distance * distance), 0.0)

    @triton.jit
    def _blur_weights(sigma, size, pixels, RADIUS: tl.constexpr, BLOCK_TAPS: tl.constexpr):
        """``augment.blur_matrix``: out×in weights of a Gaussian with reflect padding. Tap t
        of output i reads i + t, or its reflection: −(i + t) when i + t < 0 (onto j > 0),
        2(size − 1) − (i + t) when i + t ≥ size (onto j < size − 1)."""
        total = tl.sum(_gaussian(tl.arange(0, BLOCK_TAPS) - RADIUS, sigma, RADIUS), 0)
        i = pixels[:, None]
        j = pixels[None, :]
        weights = _gaussian(j - i, sigma, RADIUS)
        weights += tl.where(j > 0, _gaussian(-i - j, sigma, RADIUS), 0.0)
        weights += tl.where(j < size - 1, _gaussian(2 * (size - 1) - i - j, sigma, RADIUS), 0.0)
        return tl.where((i < size) & (j < size), weights / total, 0.0)

    @triton.jit
    def _solarize(x, threshold):
        return tl.where(x >= threshold, 1.0 - x, x)

    @triton.jit
    def _store_channel(PLANE, stride_h, stride_w, y, x, valid, tile, mean, std):
        tl.store(PLANE + y * stride_h + x * stride_w, ((tile - mean) / std).to(PLANE.dtype.element_ty), mask=valid)

    @triton.jit
    def _views_kernel(IMAGES, TABLE, OUT, n_images, size, pixel_scale, threshold,
                      image_stride_n, image_stride_c, image_stride_h, image_stride_w,
                      out_stride_n, out_stride_c, out_stride_h, out_stride_w,
                      mean_red, mean_green, mean_blue, std_red, std_green, std_blue,
                      BLUR_RADIUS: tl.constexpr, BLOCK_TAPS: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_S: tl.constexpr):
        view = tl.program_id(0)
        params = TABLE + view * _COLUMNS
        pixels = tl.arange(0, BLOCK_S)
        y = pixels[:, None]
        x = pixels[None, :]
        valid = (y < size) & (x < size)

        # Crop, resize and flip.
        rows = _resample_weights(tl.load(params + _TOP), tl.load(params + _HEIGHT), size, pixels,
                                 tl.arange(0, BLOCK_H), 0.0) * pixel_scale
        cols = _resample_weights(tl.load(params + _LEFT), tl.load(params + _WIDTH), size, pixels,
                                 tl.arange(0, BLOCK_W), tl.load(params + _FLIP))
        height = tl.load(params + _SOURCE_HEIGHT).to(tl.int32)
        width = tl.load(params + _SOURCE_WIDTH).to(tl.int32)
        IMAGE = IMAGES + (view % n_images).to(tl.int64) * image_stride_n
        red = _resample_channel(IMAGE, image_stride_h, image_stride_w, height, width, rows, cols, BLOCK_H, BLOCK_W)
        green = _resample_channel(IMAGE + image_stride_c, image_stride_h, image_stride_w, height, width, rows, cols,
                                  BLOCK_H, BLOCK_W)
        blue = _resample_channel(IMAGE + 2 * image_stride_c, image_stride_h, image_stride_w, height, width, rows,
                                 cols, BLOCK_H, BLOCK_W)

        # ColorJitter, in this view's order.
        for position in tl.static_range(4):
            adjustment = tl.load(params + _ORDER + position).to(tl.int32)
            factor = tl.load(params + _FACTORS + adjustment)
            if tl.load(params + _ACTIVE + adjustment) != 0.0:
                if adjustment == _HUE:
                    red, green, blue = _adjust_hue(red, green, blue, factor)
                else:
                    red, green, blue = _blend(red, green, blue, adjustment, factor, valid, size * size)

        if tl.load(params + _GRAY) != 0.0:
            red = _gray(red, green, blue)
            green = red
            blue = red

        sigma = tl.load(params + _SIGMA)
        if sigma > 0.0:
            blur = _blur_weights(sigma, size, pixels, BLUR_RADIUS, BLOCK_TAPS)
            red = _both_sides(blur, red, blur)
            green = _both_sides(blur, green, blur)
            blue = _both_sides(blur, blue, blur)

        if tl.load(params + _SOLARIZE) != 0.0:
            red = _solarize(red, threshold)
            green = _solarize(green, threshold)
            blue = _solarize(blue, threshold)

        OUTPUT = OUT + view.to(tl.int64) * out_stride_n
        _store_channel(OUTPUT, out_stride_h, out_stride_w, y, x, valid, red, mean_red, std_red)
        _store_channel(OUTPUT + out_stride_c, out_stride_h, out_stride_w, y, x, valid, green, mean_green, std_green)
        _store_channel(OUTPUT + 2 * out_stride_c, out_stride_h, out_stride_w, y, x, valid, blue, mean_blue, std_blue)


def fused_views_supported(images: Tensor, config: ViewConfig) -> bool:
    """Whether ``fused_views`` can make ``config``'s views of ``images``: Triton present, a
    CUDA tensor (or the Triton interpreter, for tests), RGB, and source and view sides that
    fit one register tile (the blur's reflection needs its radius below the view side). The
    kernel has none of the ops of ``pipelines/geometry.py``: ``ViewPipeline`` does not call it
    for a group whose views have any (``ViewPipeline.geometric``)."""
    runs_here = images.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"
    fits = max(*images.shape[-2:], config.size) <= MAX_FUSED_SIDE and config.blur_kernel // 2 < config.size
    return triton is not None and runs_here and images.shape[1] == 3 and fits


def fused_views(images: Tensor, sizes: Tensor, params: ViewParams, config: ViewConfig, count: int,
                out_dtype: torch.dtype = torch.float32) -> Tensor:
    """``ViewPipeline.apply(images, params)[0]`` in one launch: (count·N)×3×s×s, normalised,
    channels-last, view-major. ``images`` uint8 (or float in [0, 1]) N×3×H×W, padded;
    ``sizes`` N×2 (height, width) of each image; ``config`` the group's shared settings
    (size, blur kernel, solarize threshold, mean, std)."""
    n, device, size = images.shape[0], images.device, config.size
    table = _parameter_table(params, sizes, count).to(device, non_blocking=True)
    out = torch.empty((count * n, 3, size, size), dtype=out_dtype, device=device, memory_format=torch.channels_last)
    radius = config.blur_kernel // 2
    # tl.dot wants tile sides of at least 16. A warp per 4 rows of the view: no register spills
    # at 16 and 32 px (ptxas -v, sm_90; 36 KB of spills at 64 px with 8 warps, 5 KB with 16).
    block_h, block_w, block_s = (max(16, triton.next_power_of_2(side)) for side in (*images.shape[2:], size))
    _views_kernel[(count * n,)](
        images, table, out, n, size, 1 / 255 if images.dtype == torch.uint8 else 1.0, config.solarize_threshold,
        *images.stride(), *out.stride(), *config.mean, *config.std,
        BLUR_RADIUS=radius, BLOCK_TAPS=triton.next_power_of_2(2 * radius + 1),
        BLOCK_H=block_h, BLOCK_W=block_w, BLOCK_S=block_s, num_warps=block_s // 4,
    )
    return out
