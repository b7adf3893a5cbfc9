"""SwAV's losses — "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments" (Caron et al., 2020): the Sinkhorn–Knopp codes (Eq. 3, Appendix A.1) and the
swapped prediction between views (Eq. 1–2). Both work in fp32: the codes come from
exp(score/ε) with ε = 0.05, and the loss is a log-softmax over thousands of prototypes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fastssl.distributed import gather
from fastssl.losses.precision import at_least_fp32


def _sum_over_processes(x: Tensor) -> Tensor:
    """``x`` (one row) summed over every process, in rank order, the same on every process."""
    return gather(x[None]).sum(0)


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Codes Q* = Diag(u) exp(Cᵀz/ε) Diag(v) of Eq. 3: the soft assignment of B samples to
    K prototypes that maximises Tr(QᵀCᵀZ) + εH(Q) subject to the equipartition constraint,
    approximated by ``iterations`` alternating normalisations (Appendix A.1).

    ``scores``: b×K prototype scores zᵀc_k of this process's b samples; the B samples are
    those of every process, so the sums over samples (each prototype's mass) are gathered
    and the result is that of one process holding all B. Returns the b×K codes B·Qᵀ, as the
    paper's algorithm does: each sample's row is a distribution over the prototypes (sums
    to 1) and each prototype receives B/K of the samples' mass, exactly in the limit of
    many iterations (the transport polytope's marginals 1/K and 1/B, scaled by B).

    The paper's marginals 1/K (rows) and 1/B (columns) and its initial division by ΣQ are
    constant factors that the next normalisation divides out; rows and columns are
    normalised to sum 1 instead, which leaves the same codes.
    """
    logits = at_least_fp32(scores) / epsilon
    # exp overflows fp32 past 88 (1/ε = 20 for cosine scores, but not for every ε). A factor
    # per prototype cancels in the first row normalisation, so each prototype's scores are
    # shifted by their maximum over all processes' samples.
    shift = gather(logits.amax(0, keepdim=True)).amax(0)
    q = (logits - shift).exp().T  # K×b: Q = exp(Cᵀz/ε)
    for _ in range(iterations):
        q /= _sum_over_processes(q.sum(1))[:, None]  # each prototype: equal mass (1/K)
        q /= q.sum(0, keepdim=True)  # each sample: one unit of mass (1/B, scaled by B)
    return q.T


def swapped_prediction(scores: Tensor, codes: Tensor, temperature: float | Tensor) -> Tensor:
    """The swapped prediction problem (Eq. 1–2) over every pair of views (multi-crop, §3.2):

        ℓ(z_t, q_s) = −Σ_k q_s^(k) log p_t^(k),   p_t^(k) = exp(z_tᵀc_k/τ) / Σ_k' exp(z_tᵀc_k'/τ)

    ``scores``: V×N×K prototype scores z_tᵀc_k of V views of N images; ``codes``: A×N×K
    targets for the first A of them (the global views). Each view's codes are predicted
    from every *other* view; the mean over the A·(V−1) pairs and the N images (the
    official code's average over crops).
    """
    views, n = scores.shape[0], scores.shape[1]
    assigned = codes.shape[0]
    log_p = F.log_softmax(at_least_fp32(scores) / temperature, dim=2)
    cross = -torch.einsum("ank,vnk->av", at_least_fp32(codes), log_p) / n  # A×V: ℓ of each (code, prediction) pair
    other_view = 1.0 - torch.eye(assigned, views, device=cross.device)
    return (cross * other_view).sum() / (assigned * (views - 1))
