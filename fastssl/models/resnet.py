"""ResNet backbones built from torchvision's blocks, with the CIFAR stem and a width knob.

Parameter names match ``torchvision.models.resnet*`` so a trained backbone exports as a
plain torchvision state dict (without ``fc``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from fastssl.models.norm import norm_layer

LAYERS: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """ResNet trunk returning pooled features (and, on request, the last feature map).

    ``cifar_stem``: a 3×3 stride-1 first convolution (for 32–64 px images); ``maxpool``:
    keep the stem's max-pool (Mini-SSL keeps it for Tiny-ImageNet, drops it for CIFAR);
    ``width``: channels of the first stage (64 in the papers; smaller for CPU demos);
    ``zero_init_residual``: the last BN of every residual branch starts with γ = 0, so each
    block starts as the identity (Goyal et al., 2017; the VICRegL authors' ResNets).
    """

    feature_dim: int  # width of the pooled features

    def __init__(
        self,
        arch: str = "resnet18",
        cifar_stem: bool = True,
        maxpool: bool = False,
        width: int = 64,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if arch not in LAYERS:
            raise ValueError(f"unknown backbone '{arch}' ({', '.join(LAYERS)})")
        block, depths = LAYERS[arch]
        if cifar_stem:
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if maxpool else nn.Identity()
        self._norm, self._inplanes = norm, width
        self.layer1 = self._make_layer(block, width, depths[0], 1)
        self.layer2 = self._make_layer(block, width * 2, depths[1], 2)
        self.layer3 = self._make_layer(block, width * 4, depths[2], 2)
        self.layer4 = self._make_layer(block, width * 8, depths[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = width * 8 * block.expansion
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck | BasicBlock):
                    last_bn = module.bn3 if isinstance(module, Bottleneck) else module.bn2
                    nn.init.zeros_(last_bn.weight)
        if cifar_stem:
            # Mini-SSL swaps conv1 in after torchvision's init, so it keeps PyTorch's default.
            self.conv1.reset_parameters()

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, depth: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * block.expansion, 1, stride, bias=False),
                self._norm(planes * block.expansion),
            )
        blocks = [block(self._inplanes, planes, stride, downsample, norm_layer=self._norm)]
        self._inplanes = planes * block.expansion
        blocks += [block(self._inplanes, planes, norm_layer=self._norm) for _ in range(depth - 1)]
        return nn.Sequential(*blocks)

    def forward_map(self, x: Tensor) -> Tensor:
        """The last stage's feature map, N×D×h×w."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features, N×D."""
        return torch.flatten(self.avgpool(self.forward_map(x)), 1)

    def forward_with_map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(pooled features N×D, last feature map N×D×h×w) from one pass."""
        feature_map = self.forward_map(x)
        return torch.flatten(self.avgpool(feature_map), 1), feature_map


def build_backbone(
    arch: str, cifar_stem: bool, maxpool: bool, width: int, norm: str, bn_group_size: int,
    zero_init_residual: bool = False,
) -> ResNet:
    """A ResNet whose BN layers are ``norm`` (``split_bn``: groups of ``bn_group_size`` images)."""
    return ResNet(arch, cifar_stem, maxpool, width, norm_layer(norm, bn_group_size), zero_init_residual)
