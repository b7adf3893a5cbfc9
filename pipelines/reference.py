"""The view recipe done the usual way — torchvision transforms on PIL images, one image at
a time in DataLoader workers — as the baseline the benchmarks measure our batched ops
against."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from pipelines.spec import ViewConfig


def torchvision_transform(c: ViewConfig, blur: bool = True) -> T.Compose:
    ops = [
        T.RandomResizedCrop(c.size, scale=c.crop_scale, ratio=c.crop_ratio),
        T.RandomHorizontalFlip(c.flip_p),
        T.RandomApply([T.ColorJitter(*c.jitter)], p=c.jitter_p),
        T.RandomGrayscale(c.grayscale_p),
    ]
    if blur:
        ops.append(T.RandomApply([T.GaussianBlur(c.blur_kernel, c.blur_sigma)], p=c.blur_p))
    if c.solarize_p > 0:
        ops.append(T.RandomSolarize(round(255 * c.solarize_threshold), p=c.solarize_p))
    return T.Compose([*ops, T.ToTensor(), T.Normalize(c.mean, c.std)])


class PilTwoViews(torch.utils.data.Dataset):
    """Two views of image i, decoded with PIL by ``read(i)`` (JPEG bytes or an H×W×3 array)."""

    def __init__(self, read: Callable[[int], bytes | np.ndarray], count: int, config: ViewConfig, blur: bool = True):
        self.read, self.count, self.transform = read, count, torchvision_transform(config, blur)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.read(i)
        image = Image.open(io.BytesIO(data)).convert("RGB") if isinstance(data, bytes) else Image.fromarray(data)
        return self.transform(image), self.transform(image)
