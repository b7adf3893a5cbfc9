"""The nearest-neighbour losses against direct, loop-by-loop transcriptions of their
equations (values and gradients, in float64), and the search against a brute-force one."""

import math

import pytest
import torch

from fastssl.losses.neighbours import msf_loss, nearest_neighbours, nnclr_loss, snclr_loss


def cos(a, b):
    return (a @ b) / (a.norm() * b.norm())


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def nnclr_eq2(p, nn, tau):
    """Dwibedi et al. 2021, Eq. 2 (neighbour as anchor) and its symmetrised term (prediction
    as anchor), one pair at a time; k neighbours as Mini-SSL: each its own anchor, summed
    as positives of the prediction."""
    n, k = nn.shape[:2]
    neighbour_anchor = 0.0
    for i in range(n):
        for j in range(k):
            denominator = sum(torch.exp(cos(nn[i, j], p[m]) / tau) for m in range(n))
            neighbour_anchor = neighbour_anchor - torch.log(torch.exp(cos(nn[i, j], p[i]) / tau) / denominator)
    prediction_anchor = 0.0
    for i in range(n):
        denominator = sum(torch.exp(cos(p[i], nn[m, j]) / tau) for m in range(n) for j in range(k))
        for j in range(k):
            prediction_anchor = prediction_anchor - torch.log(torch.exp(cos(p[i], nn[i, j]) / tau) / denominator)
    return 0.5 * (neighbour_anchor / (n * k) + prediction_anchor / n)


def msf_eq(p, t, nn):
    """Mean of 2 − 2 cos between each prediction and its target and the target's neighbours."""
    n, k = nn.shape[:2]
    total = 0.0
    for i in range(n):
        for u in [t[i], *nn[i]]:
            total = total + (2 - 2 * cos(p[i], u))
    return total / (n * (k + 1))


def snclr_eq(p, z, t, nn, tau):
    """Soft-neighbour InfoNCE: weight 1 on the target, softmax_j cos(z_i, nn_ij) on the
    neighbours, over candidates = every image's target and neighbours."""
    n, k = nn.shape[:2]
    candidates = [u for m in range(n) for u in [t[m], *nn[m]]]
    total = 0.0
    for i in range(n):
        denominator = sum(torch.exp(cos(p[i], c) / tau) for c in candidates)
        attention = [torch.exp(cos(z[i], nn[i, j])) for j in range(k)]
        total = total - torch.log(torch.exp(cos(p[i], t[i]) / tau) / denominator)
        for j in range(k):
            weight = attention[j] / sum(attention)
            total = total - weight * torch.log(torch.exp(cos(p[i], nn[i, j]) / tau) / denominator)
    return total / n


def test_nearest_neighbours_match_a_brute_force_search():
    query, memory = randn(5, 6, seed=0) * 3, randn(20, 6, seed=1) * 2  # not unit rows: cosine, not dot
    indices, neighbours = nearest_neighbours(query, memory.requires_grad_(), 4)
    for i in range(5):
        similarity = [float(cos(query[i], memory[m].detach())) for m in range(20)]
        expected = sorted(range(20), key=lambda m: -similarity[m])[:4]
        assert indices[i].tolist() == expected
        torch.testing.assert_close(neighbours[i], memory[expected].detach())
    assert neighbours.shape == (5, 4, 6) and not neighbours.requires_grad  # no gradient into the memory


@pytest.mark.parametrize("k", [1, 3])
def test_nnclr_matches_equation_2_values_and_gradients(k):
    p, nn = randn(5, 4, seed=2).requires_grad_(), randn(5, k, 4, seed=3)
    loss = nnclr_loss(p, nn, p, nn, 0.2)
    reference = nnclr_eq2(p, nn, 0.2)
    assert abs(loss.item() - reference.item()) < 1e-5
    (grad,), (ref_grad,) = torch.autograd.grad(loss, p), torch.autograd.grad(reference, p)
    torch.testing.assert_close(grad.double(), ref_grad, atol=1e-6, rtol=1e-4)


def test_msf_matches_the_mean_shift_loss_values_and_gradients():
    p, t, nn = randn(4, 5, seed=4).requires_grad_(), randn(4, 5, seed=5), randn(4, 3, 5, seed=6)
    loss, reference = msf_loss(p, t, nn), msf_eq(p, t, nn)
    assert abs(loss.item() - reference.item()) < 1e-6
    (grad,), (ref_grad,) = torch.autograd.grad(loss, p), torch.autograd.grad(reference, p)
    torch.testing.assert_close(grad.double(), ref_grad, atol=1e-6, rtol=1e-4)


def test_msf_with_the_target_as_its_only_neighbour_is_byol():
    p, t = randn(4, 5, seed=7), randn(4, 5, seed=8)
    byol = (2 - 2 * torch.nn.functional.cosine_similarity(p, t)).mean()
    torch.testing.assert_close(msf_loss(p, t, t[:, None]).double(), byol, atol=1e-6, rtol=1e-5)


def test_snclr_matches_soft_neighbour_loss_values_and_gradients():
    p, z = randn(4, 5, seed=9).requires_grad_(), randn(4, 5, seed=10).requires_grad_()
    t, nn = randn(4, 5, seed=11), randn(4, 3, 5, seed=12)
    loss = snclr_loss(p, z, torch.cat([t[:, None], nn], 1), 0.2)
    reference = snclr_eq(p, z, t, nn, 0.2)
    assert abs(loss.item() - reference.item()) < 1e-5
    grads, ref_grads = torch.autograd.grad(loss, (p, z)), torch.autograd.grad(reference, (p, z))
    for grad, ref_grad in zip(grads, ref_grads, strict=True):  # the attention weights carry gradient into z
        torch.testing.assert_close(grad.double(), ref_grad, atol=1e-6, rtol=1e-4)
    assert ref_grads[1].abs().sum() > 0


def test_shards_with_offsets_average_to_the_whole_batch():
    """Two processes, each with half the batch and every process's candidates: the mean of
    their losses is the one-process loss (DDP averages the gradients likewise)."""
    p, z, t, nn = randn(6, 4, seed=13), randn(6, 4, seed=14), randn(6, 4, seed=15), randn(6, 2, 4, seed=16)
    candidates = torch.cat([t[:, None], nn], 1)
    whole = nnclr_loss(p, nn, p, nn, 0.2)
    shards = [nnclr_loss(p[s:s + 3], nn[s:s + 3], p, nn, 0.2, offset=s) for s in (0, 3)]
    torch.testing.assert_close(whole, sum(shards) / 2)
    whole = snclr_loss(p, z, candidates, 0.2)
    shards = [snclr_loss(p[s:s + 3], z[s:s + 3], candidates, 0.2, offset=s) for s in (0, 3)]
    torch.testing.assert_close(whole, sum(shards) / 2)


def test_bf16_inputs_are_upcast():
    p, nn = randn(8, 16, seed=17).float(), randn(8, 5, 16, seed=18).float()
    full = nnclr_loss(p, nn, p, nn, 0.2)
    half = nnclr_loss(p.bfloat16(), nn.bfloat16(), p.bfloat16(), nn.bfloat16(), 0.2)
    assert half.dtype == torch.float32 and math.isclose(full.item(), half.item(), abs_tol=0.05)


def test_msf_keeps_fp32_under_autocast_where_cosines_near_one_matter():
    t = randn(8, 16, seed=19).float()
    p, nn = t + 0.01 * randn(8, 16, seed=20).float(), t[:, None] + 0.01 * randn(8, 5, 16, seed=21).float()
    full = msf_loss(p, t, nn)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = msf_loss(p, t, nn)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, full, rtol=1e-4, atol=0)  # the loss is ~2e-4; bf16 cosines round it to 0


def test_neighbours_are_ranked_in_fp32_under_autocast():
    query = randn(4, 32, seed=22).float()
    # Memory rows whose cosines to the queries differ by ~1e-4 near 1: bf16 cannot tell them apart.
    memory = (query[:, None] + 0.003 * randn(4, 16, 32, seed=23).float()).reshape(64, 32)
    exact, _ = nearest_neighbours(query, memory, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = nearest_neighbours(query, memory, 5)
    assert torch.equal(mixed, exact)
