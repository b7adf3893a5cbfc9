"""Barlow Twins — "Barlow Twins: Self-Supervised Learning via Redundancy Reduction"
(Zbontar, Jing, Misra, LeCun & Deny, ICML 2021), Eq. 1.

The cross-correlation matrix of the two views' embeddings, each dimension standardised over
the batch, is pulled towards the identity: its diagonal to 1 (invariance to the
augmentations), its off-diagonal to 0 (no redundancy between dimensions).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastssl.losses.precision import at_least_fp32

BN_EPS = 1e-5  # the authors standardise with BatchNorm1d(affine=False): its ε and biased variance


def standardise(z: Tensor) -> Tensor:
    """Each dimension of N×D ``z`` to mean 0, variance 1 over the batch (biased variance,
    as BatchNorm1d in training mode), in fp32."""
    z = at_least_fp32(z)
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + BN_EPS)


def cross_correlation(z1: Tensor, z2: Tensor) -> Tensor:
    """C_ij = Σ_b z̃1_b,i · z̃2_b,j / N for batch-standardised z̃ (Eq. 2, with the norms
    replaced by the batch size as in the authors' code): D×D, fp32 even under autocast."""
    with torch.autocast(z1.device.type, enabled=False):
        return standardise(z1).T @ standardise(z2) / z1.shape[0]


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 0.0051) -> Tensor:
    """Eq. 1: L = Σ_i (1 − C_ii)² + λ Σ_i Σ_{j≠i} C_ij².

    ``z1``, ``z2``: N×D projections of the two views (row b of each from image b). In fp32:
    each correlation sums N products, and the off-diagonal term sums D² small squares, both
    beyond bf16's 8 bits. No scale factor here (solo-learn's ``scale_loss`` is the method's).
    """
    c = cross_correlation(z1, z2)
    on_diagonal = (1 - c.diagonal()).pow(2).sum()
    off_diagonal = c.masked_fill(torch.eye(len(c), dtype=torch.bool, device=c.device), 0).pow(2).sum()
    return on_diagonal + lambd * off_diagonal
