"""The distillation students: torchvision's MobileNet-V2, MobileNet-V3-small and EfficientNet-B0
trunks (and ResNet-34) as fastssl backbones, with torchvision's names, at torchvision's or the
CIFAR strides, with split BN, and loaded from a plain torchvision state dict."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models
from torchvision.models import mobilenetv3
from torchvision.ops import StochasticDepth

from fastssl.config import ModelConfig
from fastssl.models.backbone import backbone_from_config
from fastssl.models.norm import SplitBatchNorm2d
from fastssl.models.torchvision_nets import CONSTRUCTORS, TorchvisionNet
from fastssl.weights import CheckpointError, OutsideWeights, load_backbone

FAMILIES = list(CONSTRUCTORS)
FEATURE_DIMS = {"mobilenet_v2": 1280, "mobilenet_v3_small": 576, "efficientnet_b0": 1280}
# The convolutions the CIFAR stem runs at stride 1, and the side of the last map of a 32 px image
CIFAR_STRIDE_ONE = {
    "mobilenet_v2": (["features.0.0", "features.2.conv.1.0"], 4),
    "mobilenet_v3_small": (["features.0.0", "features.1.block.0.0"], 4),
    "efficientnet_b0": (["features.0.0"], 2),
}


def randomised(model: nn.Module) -> nn.Module:
    """``model`` with BN parameters and running statistics far from their initial values, so
    that an eval-mode comparison tests them too."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


def backbone_state(model: nn.Module) -> dict[str, Tensor]:
    """A torchvision state dict without its classifier."""
    return {name: value for name, value in model.state_dict().items() if not name.startswith("classifier.")}


def pooled(feature_map: Tensor) -> Tensor:
    return torch.flatten(F.adaptive_avg_pool2d(feature_map, 1), 1)


@pytest.mark.parametrize("arch", FAMILIES)
def test_the_imagenet_stem_is_torchvisions_trunk(arch):
    torch.manual_seed(0)
    reference = randomised(CONSTRUCTORS[arch](weights=None)).eval()
    net = backbone_from_config(ModelConfig(arch=arch, cifar_stem=False, norm="bn"), 64, 1).eval()
    net.load_state_dict(backbone_state(reference))  # strict
    missing, unexpected = reference.load_state_dict(net.state_dict(), strict=False)  # an export: torchvision's names
    assert not unexpected and missing and all(name.startswith("classifier.") for name in missing)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected_map = reference.features(x)
        features, feature_map = net.forward_with_map(x)
        torch.testing.assert_close(net.forward_map(x), expected_map, rtol=0, atol=0)
        torch.testing.assert_close(feature_map, expected_map, rtol=0, atol=0)
        torch.testing.assert_close(net(x), pooled(expected_map), rtol=0, atol=0)
        torch.testing.assert_close(features, pooled(expected_map), rtol=0, atol=0)
    assert net.feature_dim == FEATURE_DIMS[arch] == features.shape[1]
    if arch == "mobilenet_v3_small":  # the pooled trunk, before the classifier's Linear 576 → 1024
        assert reference.classifier[0].in_features == 576


def test_resnet34_is_torchvisions_layout():
    torch.manual_seed(0)
    reference = randomised(models.resnet34(weights=None)).eval()
    net = backbone_from_config(ModelConfig(arch="resnet34", cifar_stem=False, maxpool=True, norm="bn"), 32, 1).eval()
    net.load_state_dict({name: value for name, value in reference.state_dict().items() if not name.startswith("fc.")})
    reference.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), rtol=0, atol=0)


def torchvision_at_cifar_strides(arch: str) -> nn.Module:
    """torchvision's network built with the CIFAR strides where its constructor takes them (the
    blocks) and set where it does not (the stem's convolution)."""
    if arch == "mobilenet_v2":  # chenyaofo/pytorch-cifar-models' setting
        setting = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                   [6, 320, 1, 1]]
        model: nn.Module = models.MobileNetV2(inverted_residual_setting=setting)
    elif arch == "mobilenet_v3_small":
        blocks, last_channel = mobilenetv3._mobilenet_v3_conf(arch)
        blocks[0].stride = 1
        model = models.MobileNetV3(blocks, last_channel)
    else:
        model = models.efficientnet_b0(weights=None)
    model.features[0][0].stride = (1, 1)
    return model


@pytest.mark.parametrize("arch", FAMILIES)
def test_the_cifar_stem_is_torchvision_at_stride_one_where_documented(arch):
    torch.manual_seed(0)
    reference = randomised(torchvision_at_cifar_strides(arch)).eval()
    net = TorchvisionNet(arch, cifar_stem=True).eval()
    net.load_state_dict(backbone_state(reference))  # strict: torchvision's names and shapes
    imagenet = dict(CONSTRUCTORS[arch](weights=None).named_modules())
    at_stride_one = [name for name, module in net.named_modules()
                     if isinstance(module, nn.Conv2d) and module.stride != imagenet[name].stride]
    expected_convolutions, side = CIFAR_STRIDE_ONE[arch]
    assert at_stride_one == expected_convolutions
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feature_map = net.forward_map(x)
        torch.testing.assert_close(feature_map, reference.features(x), rtol=0, atol=0)
    assert feature_map.shape == (2, FEATURE_DIMS[arch], side, side)


@pytest.mark.parametrize("arch", FAMILIES)
def test_split_bn_is_torchvisions_bn_per_group(arch):
    torch.manual_seed(0)
    plain = randomised(TorchvisionNet(arch, cifar_stem=True, norm="bn"))
    split = TorchvisionNet(arch, cifar_stem=True, norm="split_bn", bn_group_size=2)
    split.load_state_dict(plain.state_dict())  # strict: split BN keeps BN's names
    plain_norms = {name: m for name, m in plain.named_modules() if isinstance(m, nn.BatchNorm2d)}
    split_norms = {name: m for name, m in split.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert split_norms.keys() == plain_norms.keys()
    for name, norm in split_norms.items():  # torchvision's eps and momentum, layer by layer
        assert isinstance(norm, SplitBatchNorm2d) and norm.group_size == 2
        assert (norm.eps, norm.momentum) == (plain_norms[name].eps, plain_norms[name].momentum)
    for network in (plain, split):
        network.train().double()  # BN over two 1×1 maps amplifies float32 rounding in the deep layers
        for module in network.modules():
            if isinstance(module, StochasticDepth):  # EfficientNet's random branch drops, off to compare
                module.eval()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        per_group = torch.cat([plain(group) for group in x.split(2)])
        torch.testing.assert_close(split(x), per_group)


def test_a_plain_torchvision_state_dict_loads_by_its_arch(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model = randomised(models.mobilenet_v2(weights=None)).eval()
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(model.state_dict(), path)  # with its classifier
    trained = load_backbone(path, OutsideWeights("mobilenet_v2", image_size=32), tiny_dataset)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(trained.network(x), pooled(model.features(x)), rtol=0, atol=0)
    expected = backbone_state(models.efficientnet_b0(weights=None))
    first_missing = next(name for name in expected if name not in model.state_dict())
    with pytest.raises(CheckpointError) as error:
        load_backbone(path, OutsideWeights("efficientnet_b0", image_size=32), tiny_dataset)
    message = str(error.value)
    assert "\n" not in message
    assert re.match(re.escape(f"{path}: the weights do not fit efficientnet_b0 (ImageNet stem, torchvision's widths): "
                              f"missing {first_missing} and "), message)


def test_resnet_options_are_refused_in_one_line(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match=r"^width 32: a ResNet option \(mobilenet_v2 keeps torchvision's layout\)$"):
        backbone_from_config(ModelConfig(arch="mobilenet_v2", width=32), 32, 1)
    with pytest.raises(ValueError, match=r"^zero_init_residual True: a ResNet option \(efficientnet_b0 "):
        backbone_from_config(ModelConfig(arch="efficientnet_b0", zero_init_residual=True), 32, 1)
    path = tmp_path / "mobilenet_v3_small.pth"
    torch.save(models.mobilenet_v3_small(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: width 32: a ResNet option [^\n]*$"):
        load_backbone(path, OutsideWeights("mobilenet_v3_small", width=32, image_size=32), tiny_dataset)
