"""What the method tests share: random views in the ViewBatch layout and a tiny backbone."""

import torch

from fastssl.models.resnet import ResNet, build_backbone
from pipelines.batch import ViewBatch


def batch(n: int = 4, seed: int = 0, local_crops: int = 0) -> ViewBatch:
    """n images: two 16 px global views of each (view-major) and ``local_crops`` 8 px ones."""
    g = torch.Generator().manual_seed(seed)

    def images(count: int, size: int) -> torch.Tensor:
        return torch.randn(count, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)

    views = {"global": images(2 * n, 16)}
    if local_crops:
        views["local"] = images(local_crops * n, 8)
    return ViewBatch(views, torch.arange(n), torch.zeros(n, dtype=torch.long), {})


def swapped(b: ViewBatch) -> ViewBatch:
    """The same batch with its two global views exchanged."""
    return ViewBatch({"global": torch.cat(b.views["global"].chunk(2)[::-1])}, b.indices, b.labels, {})


def tiny_backbone() -> ResNet:
    """ResNet-18 four channels wide, split-BN in groups of two images."""
    return build_backbone("resnet18", True, False, 4, "split_bn", 2)
