"""VICReg — "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning" (Bardes, Ponce & LeCun, ICLR 2022), Eqs. 1–6.

Three terms on the embeddings Z, Z' (n × d) of two views:

* invariance s(Z, Z') (Eq. 5): the mean squared distance between the two views;
* variance v(Z) (Eqs. 1–2): a hinge keeping every dimension's standard deviation over the
  batch, S(x, ε) = √(Var(x) + ε), above γ = 1;
* covariance c(Z) (Eqs. 3–4): the squared off-diagonal entries of the batch covariance,
  divided by d, decorrelating the dimensions;

ℓ = λ s(Z, Z') + μ [v(Z) + v(Z')] + ν [c(Z) + c(Z')] (Eq. 6), λ = μ = 25, ν = 1.

Sources combine the two views' variance and covariance terms differently, so each has its
own ``Reduction``: ``"sum"`` is Eq. 6 (and solo-learn); ``"mean"`` halves it. The VICReg
authors' ``main_vicreg.py`` and lightly's ``VICRegLoss`` take the mean of the variance terms
and the sum of the covariance terms; the VICRegL authors' code the mean of both.

Every term also takes N×K×D (VICRegL's K matched feature-map cells per image): the
statistics are then over the batch for each of the K slots and averaged over the slots,
as the VICRegL authors' ``_vicreg_loss`` does. Computed in fp32, also under autocast: the
variance and the D×D covariance lose their small values in bf16.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fastssl.losses.precision import at_least_fp32

EPS = 1e-4  # ε of S(x, ε) (the authors' code; solo-learn)

Reduction = Literal["sum", "mean"]  # how a term of the two views combines: t(Z) + t(Z') or their mean


def _slots(z: Tensor) -> Tensor:
    """N×D or N×K×D → N×K×D, fp32."""
    z = at_least_fp32(z)
    return z.reshape(z.shape[0], -1, z.shape[-1])


def invariance(z1: Tensor, z2: Tensor) -> Tensor:
    """s(Z, Z'), Eq. 5, as the authors' code and solo-learn compute it: the mean of the
    squared differences over samples and dimensions (the paper writes (1/n) Σ_i ‖z_i − z'_i‖²,
    d times this; λ = 25 is set for the mean)."""
    return F.mse_loss(at_least_fp32(z1), at_least_fp32(z2))


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
    variance: Tensor  # v(Z) + v(Z'), or their mean
    covariance: Tensor  # c(Z) + c(Z'), or their mean

    def weighted(self, weights: tuple[float, float, float]) -> Tensor:
        """λ s + μ v + ν c for ``weights`` = (λ, μ, ν)."""
        return weights[0] * self.invariance + weights[1] * self.variance + weights[2] * self.covariance


def _combined(first: Tensor, second: Tensor, reduction: Reduction) -> Tensor:
    return first + second if reduction == "sum" else (first + second) / 2


def vicreg_terms(
    z1: Tensor, z2: Tensor, gamma: float = 1.0, reductions: tuple[Reduction, Reduction] = ("sum", "sum")
) -> VICRegTerms:
    """The three unweighted terms for embeddings ``z1``, ``z2`` (N×D or N×K×D, row b of
    each from image b); ``reductions``: of the variance and of the covariance terms."""
    return VICRegTerms(
        invariance(z1, z2),
        _combined(variance(z1, gamma), variance(z2, gamma), reductions[0]),
        _combined(covariance(z1), covariance(z2), reductions[1]),
    )


def vicreg_loss(
    z1: Tensor, z2: Tensor, weights: tuple[float, float, float] = (25.0, 25.0, 1.0),
    reductions: tuple[Reduction, Reduction] = ("sum", "sum"),
) -> Tensor:
    """Eq. 6 with ``weights`` = (λ, μ, ν) and γ = 1 (``reductions`` as ``vicreg_terms``)."""
    return vicreg_terms(z1, z2, reductions=reductions).weighted(weights)
