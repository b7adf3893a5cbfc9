"""The InfoNCE losses against direct, loop-by-loop transcriptions of the papers' equations."""

import math

import torch

from fastssl.losses.infonce import batch_info_nce, nt_xent, queue_info_nce


def cosine(a, b):
    return float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)))


def moco_eq1(q, k, queue, tau):
    """He et al. 2020, Eq. 1, one query at a time."""
    total = 0.0
    for i in range(len(q)):
        positive = math.exp(cosine(q[i], k[i]) / tau)
        negatives = sum(math.exp(cosine(q[i], n) / tau) for n in queue)
        total += -math.log(positive / (positive + negatives))
    return total / len(q)


def nt_xent_eq1(z1, z2, tau):
    """Chen et al. 2020, Eq. 1 over the 2N projections, anchors in both views."""
    z = torch.cat([z1, z2])
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(math.exp(cosine(z[i], z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(cosine(z[i], z[j]) / tau) / denominator)
    return total / (2 * n)


def cross_view_eq(z1, z2, tau):
    """Mini-SSL's SimCLR: each z1_i against all of z2, plus the reverse, averaged."""
    def one_way(a, b):
        total = 0.0
        for i in range(len(a)):
            denominator = sum(math.exp(cosine(a[i], b[k]) / tau) for k in range(len(b)))
            total += -math.log(math.exp(cosine(a[i], b[i]) / tau) / denominator)
        return total / len(a)
    return 0.5 * (one_way(z1, z2) + one_way(z2, z1))


def test_queue_info_nce_matches_moco_equation():
    g = torch.Generator().manual_seed(0)
    q, k, queue = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g), torch.randn(9, 5, generator=g)
    loss = queue_info_nce(q, k, queue, 0.2)
    assert abs(loss.item() - moco_eq1(q, k, queue, 0.2)) < 1e-5


def test_nt_xent_matches_simclr_equation():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    z = torch.cat([z1, z2])
    local = torch.arange(10)
    partner = torch.cat([local[5:], local[:5]])
    loss = nt_xent(z, z, local, partner, 0.5)
    assert abs(loss.item() - nt_xent_eq1(z1, z2, 0.5)) < 1e-5


def test_cross_view_matches_mini_ssl():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    loss = 0.5 * (batch_info_nce(z1, z2, 0.2) + batch_info_nce(z2, z1, 0.2))
    assert abs(loss.item() - cross_view_eq(z1, z2, 0.2)) < 1e-5


def reference_gradients(fn, *tensors):
    """Gradients of the loop transcription by central differences in float64."""
    grads = []
    for t in tensors:
        grad = torch.zeros_like(t, dtype=torch.float64)
        for index in range(t.numel()):
            plus, minus = t.clone().double(), t.clone().double()
            plus.view(-1)[index] += 1e-5
            minus.view(-1)[index] -= 1e-5
            args_plus = [plus if s is t else s.double() for s in tensors]
            args_minus = [minus if s is t else s.double() for s in tensors]
            grad.view(-1)[index] = (fn(*args_plus) - fn(*args_minus)) / 2e-5
        grads.append(grad)
    return grads


def test_gradients_match_the_equations():
    g = torch.Generator().manual_seed(3)
    q, k, queue = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g)
    q.requires_grad_(), k.requires_grad_()
    queue_info_nce(q, k, queue, 0.2).backward()
    ref_q, ref_k = reference_gradients(lambda a, b: moco_eq1(a, b, queue.double(), 0.2), q.detach(), k.detach())
    torch.testing.assert_close(q.grad.double(), ref_q, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(k.grad.double(), ref_k, atol=1e-4, rtol=1e-3)

    z1, z2 = torch.randn(3, 4, generator=g, requires_grad=True), torch.randn(3, 4, generator=g, requires_grad=True)
    z = torch.cat([z1, z2])
    local = torch.arange(6)
    nt_xent(z, z, local, torch.cat([local[3:], local[:3]]), 0.5).backward()
    ref1, ref2 = reference_gradients(lambda a, b: nt_xent_eq1(a, b, 0.5), z1.detach(), z2.detach())
    torch.testing.assert_close(z1.grad.double(), ref1, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(z2.grad.double(), ref2, atol=1e-4, rtol=1e-3)


def test_bf16_inputs_are_upcast():
    g = torch.Generator().manual_seed(4)
    q, k, queue = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g), torch.randn(4096, 16, generator=g)
    full = queue_info_nce(q, k, queue, 0.2)
    half = queue_info_nce(q.bfloat16(), k.bfloat16(), queue.bfloat16(), 0.2)
    assert half.dtype == torch.float32
    assert abs(full.item() - half.item()) < 0.05
