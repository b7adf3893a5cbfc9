"""Barlow Twins' loss against a loop-by-loop transcription of Eq. 1, and its invariants."""

import torch

from fastssl.losses.barlow_twins import barlow_twins_loss


def barlow_twins_eq1(z1, z2, lambd):
    """Zbontar et al. 2021, Eq. 1, entry by entry: each dimension standardised over the
    batch (BatchNorm1d without affine: biased variance, ε 1e-5), C_ij = Σ_b z1_bi z2_bj / N."""
    n, d = z1.shape

    def standardised(z):
        columns = []
        for j in range(d):
            mean = sum(z[b, j] for b in range(n)) / n
            var = sum((z[b, j] - mean) ** 2 for b in range(n)) / n
            columns.append([(z[b, j] - mean) / torch.sqrt(var + 1e-5) for b in range(n)])
        return columns

    a, b_ = standardised(z1), standardised(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[i][b] * b_[j][b] for b in range(n)) / n
            loss = loss + ((1 - c_ij) ** 2 if i == j else lambd * c_ij**2)
    return loss


def whitened(n, d, seed):
    """N×D with every column of mean 0 and (biased) variance 1, columns uncorrelated."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(a - a.mean(0))  # orthonormal columns, orthogonal to the ones vector
    return (q * n**0.5).float()


def test_value_and_gradients_match_equation_1():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 4, generator=g, requires_grad=True)
    z2 = (0.5 * z1.detach() + torch.randn(6, 4, generator=g)).requires_grad_()
    loss = barlow_twins_loss(z1, z2, lambd=0.3)
    reference = barlow_twins_eq1(z1.double(), z2.double(), 0.3)
    torch.testing.assert_close(loss.double(), reference, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(loss, (z1, z2))
    reference_grads = torch.autograd.grad(reference, (z1, z2))
    for got, want in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-5)


def test_zero_for_identical_whitened_embeddings():
    z = whitened(32, 8, seed=1)
    assert barlow_twins_loss(z, z).item() < 1e-8


def test_redundant_dimensions_cost_only_the_off_diagonal_term():
    z = whitened(32, 4, seed=2)
    z = torch.cat([z, z[:, :1]], 1)  # dimension 4 repeats dimension 0: C_04 = C_40 = 1
    torch.testing.assert_close(barlow_twins_loss(z, z, lambd=0.01), torch.tensor(0.02), atol=1e-6, rtol=1e-4)


def test_bf16_inputs_are_upcast():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(64, 32, generator=g), torch.randn(64, 32, generator=g)
    full = barlow_twins_loss(z1, z2)
    half = barlow_twins_loss(z1.bfloat16(), z2.bfloat16())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=2e-2, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the correlation's products stay fp32
        torch.testing.assert_close(barlow_twins_loss(z1, z2), full)
