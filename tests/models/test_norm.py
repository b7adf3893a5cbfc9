import pytest
import torch
import torch.nn.functional as F

from fastssl.models.norm import SplitBatchNorm2d, _GroupBatchNorm
from fastssl.models.resnet import ResNet, build_backbone


def per_group_reference(layer, x):
    """BN over each group by torch's own batch norm, one call per group."""
    return torch.cat([
        F.batch_norm(part.float().contiguous(), None, None, layer.weight, layer.bias, True, 0.0, layer.eps)
        for part in x.split(layer.group_size)
    ])


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_split_bn_is_bn_per_group(memory_format):
    g = torch.Generator().manual_seed(0)
    x = (3 + 2 * torch.randn(12, 5, 4, 3, generator=g)).contiguous(memory_format=memory_format).requires_grad_()
    layer = SplitBatchNorm2d(5, group_size=4)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    out = layer(x)
    assert out.is_contiguous(memory_format=memory_format)
    reference = per_group_reference(layer, x)
    torch.testing.assert_close(out, reference)
    grad = torch.randn(out.shape, generator=g)
    ours = torch.autograd.grad(out, (x, layer.weight, layer.bias), grad)
    expected = torch.autograd.grad(reference, (x, layer.weight, layer.bias), grad)
    for name, a, b in zip(("input", "weight", "bias"), ours, expected, strict=True):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"gradient of the {name}: {m}")


def test_split_bn_keeps_bfloat16_and_computes_its_statistics_in_float32():
    """A bf16 batch (autocast's conv output) is normalised with fp32 statistics: the result
    is the fp32 reference rounded once to bf16, even for activations far from zero mean."""
    g = torch.Generator().manual_seed(1)
    x32 = (40 + torch.randn(16, 6, 5, 5, generator=g)).contiguous(memory_format=torch.channels_last)
    x = x32.bfloat16().requires_grad_()
    layer = SplitBatchNorm2d(6, group_size=4)
    out = layer(x)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    reference = per_group_reference(layer, x.detach())
    torch.testing.assert_close(out.float(), reference, atol=0.02, rtol=0.01)  # bf16: 8 significant bits
    (dx,) = torch.autograd.grad(out.float().square().sum(), x)
    assert dx.dtype == torch.bfloat16 and torch.isfinite(dx.float()).all()


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_split_bn_gradients_pass_gradcheck(memory_format):
    """Finite differences in float64 against the hand-written backward."""
    g = torch.Generator().manual_seed(2)
    x = (1 + torch.randn(6, 3, 2, 3, generator=g, dtype=torch.float64)).contiguous(memory_format=memory_format)
    weight = torch.rand(3, generator=g, dtype=torch.float64) + 0.5
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (x, weight, bias))
    assert torch.autograd.gradcheck(lambda *a: _GroupBatchNorm.apply(*a, 2, 1e-5)[0], inputs)


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_split_bn_compiles_into_one_graph(memory_format):
    """No graph break, forward or backward, in either memory format (an out= into a
    non-contiguous view would break the graph at every layer)."""
    layer = SplitBatchNorm2d(4, group_size=2)
    x = torch.randn(8, 4, 3, 3).contiguous(memory_format=memory_format).requires_grad_()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, per_group_reference(layer, x))


def test_split_bn_running_stats_average_the_groups():
    x = torch.randn(8, 3, 4, 4)
    layer = SplitBatchNorm2d(3, group_size=4, momentum=0.5)
    layer(x)
    groups = x.view(2, 4, 3, 4, 4)
    mean = groups.mean(dim=(1, 3, 4)).mean(0)
    var = groups.var(dim=(1, 3, 4), unbiased=True).mean(0)
    torch.testing.assert_close(layer.running_mean, 0.5 * mean)
    torch.testing.assert_close(layer.running_var, 0.5 + 0.5 * var)
    layer.eval()  # evaluation is plain BN with the running statistics
    expected = F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias, False)
    torch.testing.assert_close(layer(x), expected)


def test_backbone_shapes_and_torchvision_names():
    import torchvision

    net = build_backbone("resnet18", True, False, 64, "split_bn", 2)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    assert net(x).shape == (4, 512)
    assert net.forward_map(x).shape == (4, 512, 4, 4)
    reference = torchvision.models.resnet18()
    ours = ResNet("resnet18", cifar_stem=False, maxpool=True)
    names = {k for k in reference.state_dict() if not k.startswith("fc.")}
    assert names == set(ours.state_dict())
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
    reference.fc = torch.nn.Identity()
    reference.eval(), ours.eval()
    image = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(image), reference(image))
