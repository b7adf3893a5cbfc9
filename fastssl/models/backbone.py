"""The backbone a configuration names: a ResNet or a torchvision MobileNet/EfficientNet (with
its BN choice), or a ViT."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from torch import Tensor
from torch.nn import Parameter

from fastssl.config import ModelConfig
from fastssl.models.resnet import ResNet, build_backbone
from fastssl.models.torchvision_nets import CONSTRUCTORS, TorchvisionNet
from fastssl.models.vit import ViT


class Backbone(Protocol):
    """What the methods use of a backbone (``ResNet``, ``TorchvisionNet``, ``ViT``; ``nn.Module``s): the
    width of its pooled features, its three forward passes and its parameters."""

    feature_dim: int

    def __call__(self, x: Tensor) -> Tensor: ...  # ``forward`` through nn.Module's hooks

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features, N×D."""
        ...

    def forward_map(self, x: Tensor) -> Tensor:
        """The last feature map, N×D×h×w."""
        ...

    def forward_with_map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(pooled features, last feature map) from one pass."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]: ...


def backbone_from_config(cfg: ModelConfig, image_size: int, bn_group_size: int) -> ResNet | TorchvisionNet | ViT:
    """``cfg``'s backbone for images of ``image_size`` pixels; ``bn_group_size``: images per
    split-BN group (CNNs with ``norm="split_bn"``). Every backbone has ``feature_dim``,
    ``forward`` (pooled features) and ``forward_map`` (the last feature map)."""
    if cfg.arch.startswith("vit"):
        return ViT(cfg.arch, image_size, cfg.patch_size)
    if cfg.arch in CONSTRUCTORS:
        refuse_resnet_options(cfg)  # ``maxpool`` is ignored: outside weights' defaults keep it on
        return TorchvisionNet(cfg.arch, cfg.cifar_stem, cfg.norm, bn_group_size)
    return build_backbone(cfg.arch, cfg.cifar_stem, cfg.maxpool, cfg.width, cfg.norm, bn_group_size,
                          cfg.zero_init_residual)


def refuse_resnet_options(cfg: ModelConfig) -> None:
    """A torchvision MobileNet/EfficientNet is built at torchvision's widths and initialisation:
    a ResNet option set otherwise than its default would be silently ignored."""
    default = ModelConfig()
    for option in ("width", "zero_init_residual"):
        value = getattr(cfg, option)
        if value != getattr(default, option):
            raise ValueError(f"{option} {value}: a ResNet option ({cfg.arch} keeps torchvision's layout)")
