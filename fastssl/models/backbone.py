"""The backbone a configuration names: a ResNet (with its BN choice) or a ViT."""

from __future__ import annotations

from torch import nn

from fastssl.config import ModelConfig
from fastssl.models.resnet import build_backbone
from fastssl.models.vit import ViT


def backbone_from_config(cfg: ModelConfig, image_size: int, bn_group_size: int) -> nn.Module:
    """``cfg``'s backbone for images of ``image_size`` pixels; ``bn_group_size``: images per
    split-BN group (ResNets with ``norm="split_bn"``). Every backbone has ``feature_dim``,
    ``forward`` (pooled features) and ``forward_map`` (the last feature map)."""
    if cfg.arch.startswith("vit"):
        return ViT(cfg.arch, image_size, cfg.patch_size)
    return build_backbone(cfg.arch, cfg.cifar_stem, cfg.maxpool, cfg.width, cfg.norm, bn_group_size)
