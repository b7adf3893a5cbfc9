"""VICReg's terms against loop-by-loop transcriptions of Eqs. 1–6, and their invariants."""

import torch

from fastssl.losses.vicreg import covariance, invariance, variance, vicreg_loss, vicreg_terms


def variance_eq1(z, gamma=1.0, eps=1e-4):
    """v(Z) = (1/d) Σ_j max(0, γ − √(Var(z^j) + ε)), Var unbiased (Eqs. 1–2)."""
    n, d = z.shape
    total = 0.0
    for j in range(d):
        mean = sum(z[b, j] for b in range(n)) / n
        var = sum((z[b, j] - mean) ** 2 for b in range(n)) / (n - 1)
        total = total + torch.clamp(gamma - torch.sqrt(var + eps), min=0)
    return total / d


def covariance_eq3(z):
    """c(Z) = (1/d) Σ_{i≠j} C_ij², C = Σ_b (z_b − z̄)(z_b − z̄)ᵀ / (n − 1) (Eqs. 3–4)."""
    n, d = z.shape
    means = [sum(z[b, j] for b in range(n)) / n for j in range(d)]
    total = 0.0
    for i in range(d):
        for j in range(d):
            if i != j:
                c_ij = sum((z[b, i] - means[i]) * (z[b, j] - means[j]) for b in range(n)) / (n - 1)
                total = total + c_ij**2
    return total / d


def invariance_eq5(z1, z2):
    """s(Z, Z') as the authors' code computes it: the mean over samples and dimensions."""
    n, d = z1.shape
    return sum((z1[b, j] - z2[b, j]) ** 2 for b in range(n) for j in range(d)) / (n * d)


def vicreg_eq6(z1, z2, weights):
    lam, mu, nu = weights
    return (lam * invariance_eq5(z1, z2) + mu * (variance_eq1(z1) + variance_eq1(z2))
            + nu * (covariance_eq3(z1) + covariance_eq3(z2)))


def whitened(n, d, seed, std=1.0):
    """N×D with uncorrelated columns of mean 0 and unbiased standard deviation ``std``."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(a - a.mean(0))
    return (q * std * (n - 1) ** 0.5).float()


def test_value_and_gradients_match_equation_6():
    g = torch.Generator().manual_seed(0)
    z1 = (0.8 * torch.randn(7, 5, generator=g)).requires_grad_()  # std below 1: the hinge is active
    z2 = (0.5 * z1.detach() + 0.9 * torch.randn(7, 5, generator=g)).requires_grad_()
    weights = (25.0, 25.0, 1.0)
    loss = vicreg_loss(z1, z2, weights)
    reference = vicreg_eq6(z1.double(), z2.double(), weights)
    torch.testing.assert_close(loss.double(), reference, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(loss, (z1, z2))
    reference_grads = torch.autograd.grad(reference, (z1, z2))
    for got, want in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-5)


def test_each_term_matches_its_equation():
    g = torch.Generator().manual_seed(1)
    z1, z2 = 0.7 * torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    torch.testing.assert_close(invariance(z1, z2).double(), invariance_eq5(z1.double(), z2.double()))
    torch.testing.assert_close(variance(z1).double(), variance_eq1(z1.double()), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(covariance(z2).double(), covariance_eq3(z2.double()), rtol=1e-5, atol=1e-6)
    terms = vicreg_terms(z1, z2)
    torch.testing.assert_close(terms.variance, variance(z1) + variance(z2))
    torch.testing.assert_close(terms.covariance, covariance(z1) + covariance(z2))


def test_variance_is_zero_above_the_threshold_and_positive_below():
    assert variance(whitened(32, 8, seed=2, std=1.5)).item() == 0.0
    assert variance(3 * torch.randn(256, 8, generator=torch.Generator().manual_seed(3))).item() == 0.0
    below = variance(whitened(32, 8, seed=4, std=0.5))
    torch.testing.assert_close(below, torch.tensor(1 - (0.25 + 1e-4) ** 0.5))
    assert variance(torch.zeros(16, 4)).item() > 0.98  # collapse: √ε = 0.01 from the hinge's 1


def test_covariance_is_zero_for_decorrelated_embeddings():
    assert covariance(whitened(32, 8, seed=5, std=2.0)).item() < 1e-10
    z = whitened(32, 3, seed=6)
    correlated = torch.cat([z, z[:, :1]], 1)  # dimension 3 repeats dimension 0: C_03 = C_30 = 1
    torch.testing.assert_close(covariance(correlated), torch.tensor(2 / 4))


def test_slotted_embeddings_take_statistics_per_slot():
    """N×K×D (VICRegL's matched cells): statistics over the batch for each slot, then the mean."""
    g = torch.Generator().manual_seed(7)
    z = torch.randn(9, 3, 5, generator=g) * torch.tensor([0.3, 1.0, 2.0])[:, None]
    torch.testing.assert_close(variance(z), torch.stack([variance(z[:, k]) for k in range(3)]).mean())
    torch.testing.assert_close(covariance(z), torch.stack([covariance(z[:, k]) for k in range(3)]).mean())


def test_bf16_inputs_are_upcast():
    g = torch.Generator().manual_seed(8)
    z1, z2 = torch.randn(64, 32, generator=g), torch.randn(64, 32, generator=g)
    full = vicreg_loss(z1, z2)
    half = vicreg_loss(z1.bfloat16(), z2.bfloat16())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=2e-2, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the covariance's products stay fp32
        torch.testing.assert_close(vicreg_loss(z1, z2), full)
