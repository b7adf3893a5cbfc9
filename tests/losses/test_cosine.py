"""BYOL's and SimSiam's regression losses against direct, row-by-row transcriptions of the
papers' equations: values, gradients, and the stop-gradient on the target."""

import torch

from fastssl.losses.cosine import negative_cosine, normalized_l2


def byol_eq2(p, z):
    """Grill et al. 2020, Eq. 2 for each row, ‖p/‖p‖₂ − z/‖z‖₂‖₂², averaged; the target is a
    constant for the gradient (θ only, §3.1)."""
    total = 0.0
    for i in range(len(p)):
        target = z[i].detach()
        p_bar = p[i] / torch.sqrt(sum(v * v for v in p[i]))
        z_bar = target / torch.sqrt(sum(v * v for v in target))
        total = total + sum((a - b) ** 2 for a, b in zip(p_bar, z_bar, strict=True))
    return total / len(p)


def simsiam_eq3(p, z):
    """Chen & He 2021, Eq. 1 with Eq. 3's stopgrad, −p/‖p‖₂ · z/‖z‖₂ per row, averaged."""
    total = 0.0
    for i in range(len(p)):
        target = z[i].detach()
        dot = sum(a * b for a, b in zip(p[i], target, strict=True))
        total = total - dot / (torch.sqrt(sum(v * v for v in p[i])) * torch.sqrt(sum(v * v for v in target)))
    return total / len(p)


def inputs(seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    return p, z


def test_losses_match_the_equations_in_value_and_gradient():
    for loss, reference, seed in ((normalized_l2, byol_eq2, 0), (negative_cosine, simsiam_eq3, 1)):
        p, z = inputs(seed)
        value = loss(p, z)
        expected = reference(p, z)
        assert value.dtype == torch.float64  # float64 input stays float64 (bf16 is upcast, below)
        torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-6)
        (grad,) = torch.autograd.grad(value, p)
        (expected_grad,) = torch.autograd.grad(expected, p)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_no_gradient_reaches_the_target():
    for loss in (normalized_l2, negative_cosine):
        p, z = inputs(2)
        (grad,) = torch.autograd.grad(loss(p, z), z, allow_unused=True)
        assert grad is None


def test_relation_range_and_scale_invariance():
    p, z = inputs(3)
    torch.testing.assert_close(normalized_l2(p, z), 2 + 2 * negative_cosine(p, z))
    torch.testing.assert_close(normalized_l2(3.0 * p, 0.5 * z), normalized_l2(p, z))
    assert 0 <= normalized_l2(p, z) <= 4
    aligned = 2.0 * p.detach()
    torch.testing.assert_close(normalized_l2(p, aligned), torch.tensor(0.0, dtype=p.dtype), atol=1e-6, rtol=0)
    torch.testing.assert_close(negative_cosine(p, aligned), torch.tensor(-1.0, dtype=p.dtype))
    torch.testing.assert_close(negative_cosine(p, -aligned), torch.tensor(1.0, dtype=p.dtype))


def test_bf16_inputs_are_upcast():
    p, z = inputs(4)
    low = negative_cosine(p.detach().bfloat16(), z.detach().bfloat16())
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, negative_cosine(p.detach(), z.detach()).float(), atol=2e-2, rtol=0)
