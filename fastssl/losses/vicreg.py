"""VICReg — "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning" (Bardes, Ponce & LeCun, ICLR 2022), Eqs. 1–6.

Three terms on the embeddings Z, Z' (n × d) of two views:

* invariance s(Z, Z') (Eq. 5): the mean squared distance between the two views;
* variance v(Z) (Eqs. 1–2): a hinge keeping every dimension's standard deviation over the
  batch, S(x, ε) = √(Var(x) + ε), above γ = 1;
* covariance c(Z) (Eqs. 3–4): the squared off-diagonal entries of the batch covariance,
  divided by d, decorrelating the dimensions;

ℓ = λ s(Z, Z') + μ [v(Z) + v(Z')] + ν [c(Z) + c(Z')] (Eq. 6), λ = μ = 25, ν = 1.

Every term also takes N×K×D (VICRegL's K matched feature-map cells per image): the
statistics are then over the batch for each of the K slots and averaged over the slots,
as the VICRegL authors' ``_vicreg_loss`` does. Computed in fp32, also under autocast: the
variance and the D×D covariance lose their small values in bf16.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-4  # ε of S(x, ε) (the authors' code; solo-learn)


def _slots(z: Tensor) -> Tensor:
    """N×D or N×K×D → N×K×D, fp32."""
    z = z.float()
    return z.reshape(z.shape[0], -1, z.shape[-1])


def invariance(z1: Tensor, z2: Tensor) -> Tensor:
    """s(Z, Z'), Eq. 5, as the authors' code and solo-learn compute it: the mean of the
    squared differences over samples and dimensions (the paper writes (1/n) Σ_i ‖z_i − z'_i‖²,
    d times this; λ = 25 is set for the mean)."""
    return F.mse_loss(z1.float(), z2.float())


def variance(z: Tensor, gamma: float = 1.0) -> Tensor:
    """v(Z), Eqs. 1–2: (1/d) Σ_j max(0, γ − √(Var(z^j) + ε)), Var unbiased over the batch."""
    std = torch.sqrt(_slots(z).var(dim=0) + EPS)
    return F.relu(gamma - std).mean()


def covariance(z: Tensor) -> Tensor:
    """c(Z), Eqs. 3–4: (1/d) Σ_{i≠j} C(Z)_ij², C(Z) = Σ_b (z_b − z̄)(z_b − z̄)ᵀ / (n − 1)."""
    z = _slots(z)
    n, _, d = z.shape
    z = z - z.mean(0)
    with torch.autocast(z.device.type, enabled=False):  # autocast would run the products in bf16
        cov = torch.einsum("nki,nkj->kij", z, z) / (n - 1)
    off_diagonal = cov.masked_fill(torch.eye(d, dtype=torch.bool, device=z.device), 0)
    return (off_diagonal.pow(2).sum((1, 2)) / d).mean()


class VICRegTerms(NamedTuple):
    invariance: Tensor  # s(Z, Z')
    variance: Tensor  # v(Z) + v(Z')
    covariance: Tensor  # c(Z) + c(Z')

    def weighted(self, weights: tuple[float, float, float]) -> Tensor:
        """λ s + μ [v + v'] + ν [c + c'] (Eq. 6) for ``weights`` = (λ, μ, ν)."""
        return weights[0] * self.invariance + weights[1] * self.variance + weights[2] * self.covariance


def vicreg_terms(z1: Tensor, z2: Tensor, gamma: float = 1.0) -> VICRegTerms:
    """The three unweighted terms for embeddings ``z1``, ``z2`` (N×D or N×K×D, row b of
    each from image b)."""
    return VICRegTerms(
        invariance(z1, z2), variance(z1, gamma) + variance(z2, gamma), covariance(z1) + covariance(z2)
    )


def vicreg_loss(z1: Tensor, z2: Tensor, weights: tuple[float, float, float] = (25.0, 25.0, 1.0)) -> Tensor:
    """Eq. 6 with ``weights`` = (λ, μ, ν) and γ = 1."""
    return vicreg_terms(z1, z2).weighted(weights)
