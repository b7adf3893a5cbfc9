"""Students for self-supervised distillation: the feature trunks of torchvision's MobileNet-V2,
MobileNet-V3-small and EfficientNet-B0, built with ``weights=None`` (nothing is downloaded),
their classifiers dropped. (ResNet-34 is fastssl's own ``ResNet``, torchvision's layout too.)

The trunk is torchvision's ``features`` module under that name, so a torchvision state dict
without ``classifier.*`` loads strictly and an export is such a state dict. The pooled
features are the global average of the last feature map: 1280-d for MobileNet-V2 and
EfficientNet-B0, 576-d for MobileNet-V3-small (torchvision's classifier begins with a Linear
576→1024 after the pooling; it goes with the classifier). EfficientNet-B0 keeps torchvision's
stochastic depth on its residual branches in training mode.

The CIFAR stem (32–64 px images) sets the stride of torchvision's own convolutions to 1, so
the names and shapes stay torchvision's; the ImageNet stem is torchvision's trunk unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision import models
from torchvision.models import EfficientNet, MobileNetV2, MobileNetV3, mobilenetv2, mobilenetv3

from fastssl.models.norm import SplitBatchNorm2d

CONSTRUCTORS: dict[str, Callable[..., MobileNetV2 | MobileNetV3 | EfficientNet]] = {
    "mobilenet_v2": models.mobilenet_v2,
    "mobilenet_v3_small": models.mobilenet_v3_small,
    "efficientnet_b0": models.efficientnet_b0,
}

# With the CIFAR stem the stem's convolution (features[0]) runs at stride 1, and so does this
# block of the trunk (None: none), as the CIFAR versions of these networks do:
CIFAR_STRIDE_ONE_BLOCK: dict[str, int | None] = {
    # kuangliu/pytorch-cifar models/mobilenetv2.py ("NOTE: change stride 2 -> 1 for CIFAR10") and
    # chenyaofo/pytorch-cifar-models, torchvision's code so changed: conv1 and the first 24-channel
    # block. Output stride 8: 32 px → 4×4.
    "mobilenet_v2": 2,
    # ShowLo/MobileNetV3 mobileNetV3.py (input_size 32): the first convolution and the first
    # bottleneck, 16 → 16 channels, which then has its identity shortcut. Output stride 8: 32 px → 4×4.
    "mobilenet_v3_small": 1,
    # kuangliu/pytorch-cifar models/efficientnet.py: conv1 only, every stage keeps its stride.
    # Output stride 16: 32 px → 2×2.
    "efficientnet_b0": None,
}


class TorchvisionNet(nn.Module):
    """A torchvision trunk returning pooled features (and, on request, the last feature map).

    ``cifar_stem``: the strides of ``CIFAR_STRIDE_ONE_BLOCK``; ``norm``: ``bn`` or ``sync_bn``
    (torchvision's BatchNorm2d; ``convert_sync_bn`` syncs it later) or ``split_bn`` (groups of
    ``bn_group_size`` images).
    """

    feature_dim: int  # width of the pooled features

    def __init__(self, arch: str, cifar_stem: bool = True, norm: str = "bn", bn_group_size: int = 1) -> None:
        super().__init__()
        if arch not in CONSTRUCTORS:
            raise ValueError(f"unknown backbone '{arch}' ({', '.join(CONSTRUCTORS)})")
        self.features: nn.Sequential = CONSTRUCTORS[arch](weights=None).features
        if cifar_stem:
            _at_stride_one(self.features[0])
            block = CIFAR_STRIDE_ONE_BLOCK[arch]
            if block is not None:
                _inverted_residual_at_stride_one(self.features[block])
        if norm == "split_bn":
            _split_batch_norms(self.features, bn_group_size)
        elif norm not in ("bn", "sync_bn"):
            raise ValueError(f"unknown norm '{norm}' (bn, split_bn, sync_bn)")
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = [m for m in self.features.modules() if isinstance(m, nn.Conv2d)][-1].out_channels

    def forward_map(self, x: Tensor) -> Tensor:
        """The last feature map, N×D×h×w."""
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features, N×D."""
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward_with_map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(pooled features N×D, last feature map N×D×h×w) from one pass."""
        feature_map = self.features(x)
        return torch.flatten(self.avgpool(feature_map), 1), feature_map


def _at_stride_one(module: nn.Module) -> None:
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            conv.stride = (1, 1)  # same padding ((k − 1)/2), so the map keeps its size


def _inverted_residual_at_stride_one(block: mobilenetv2.InvertedResidual | mobilenetv3.InvertedResidual) -> None:
    """The block as torchvision builds it at stride 1: torchvision decides its identity shortcut
    when it builds it (stride 1 and as many channels out as in), so decide it again."""
    _at_stride_one(block)
    channels_in = next(m for m in block.modules() if isinstance(m, nn.Conv2d)).in_channels
    block.use_res_connect = channels_in == block.out_channels


def _split_batch_norms(module: nn.Module, group_size: int) -> None:
    """Every BatchNorm2d of ``module`` becomes a SplitBatchNorm2d of the same name, eps and
    momentum (torchvision's differ by family: MobileNet-V3's are 1e-3 and 0.01), parameters and
    running statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            split = SplitBatchNorm2d(child.num_features, group_size, eps=child.eps, momentum=child.momentum)
            split.load_state_dict(child.state_dict())
            setattr(module, name, split)
        else:
            _split_batch_norms(child, group_size)
