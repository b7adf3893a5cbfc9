"""The Jaccard-similarity InfoNCE of seed 004: Jiang, Krim, Wu & Cansever, "Refining
self-supervised learning in imaging: beyond linear metric" (ICIP 2022, arXiv 2202.12921).

The paper's text was not available here; the formula is the one the first author's public
MoCo code computes (bjiang99/Ph.D.-s-Projects, SSL/SSL_MoCo_Jaccard/train_jaccard_tiny.py
and model_jaccard.py @fe50c32). Two projection heads embed every image: g_p, whose unit
outputs measure similarity, and g_n, whose unit outputs measure dissimilarity. For a query
q and a candidate c:

    S = 1 + q_p·c_p            ∈ [0, 2]   a similarity kernel (shifted cosine)
    D = 2 − 2 q_n·c_n          ∈ [0, 4]   a dissimilarity kernel (‖q_n − c_n‖² of unit vectors)
    J = S / (S + D)            ∈ [0, 1]   the Jaccard index |A∩B| / (|A∩B| + |A△B|) = |A∩B| / |A∪B|

with S in the role of the intersection and D of the symmetric difference. J replaces the
cosine in MoCo's InfoNCE, next to small InfoNCE terms on each head's own cosine:

    L = 0.8 · NCE(J) + 0.1 · NCE(q_p·c_p) + 0.1 · NCE(q_n·c_n)

Inputs are upcast to fp32 (log-sum-exp over thousands of candidates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fastssl.losses.infonce import unit


def jaccard_similarity(similarity_cosine: Tensor, dissimilarity_cosine: Tensor) -> Tensor:
    """J = S / (S + D) from the cosines of the similarity head (S = 1 + cos) and of the
    dissimilarity head (D = 2 − 2 cos), element-wise. S + D vanishes only where the
    similarity embeddings are opposite and the dissimilarity ones equal at once; the floor
    keeps that point finite."""
    s = 1 + similarity_cosine
    d = 2 - 2 * dissimilarity_cosine
    return s / (s + d).clamp_min(1e-6)


def _heads(x: Tensor) -> tuple[Tensor, Tensor]:
    """The halves of rows [g_p | g_n], each L2-normalised, in fp32."""
    p, n = x.chunk(2, dim=1)
    return unit(p), unit(n)


def _cosines(query: Tensor, key: Tensor, queue: Tensor) -> Tensor:
    """[q·k, q·queue] for unit rows: N×(1+K), the positive first."""
    return torch.cat([(query * key).sum(1, keepdim=True), query @ queue.T], dim=1)


def jaccard_info_nce(
    query: Tensor,
    key: Tensor,
    queue: Tensor,
    temperature: float,
    weights: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> Tensor:
    """MoCo's InfoNCE (He et al., 2020, Eq. 1) on the Jaccard similarity J/τ, plus the
    InfoNCE of each head's cosine/τ, weighted by ``weights`` (Jaccard, similarity head,
    dissimilarity head; the author's code: 0.8, 0.1, 0.1).

    Every row of ``query`` and ``key`` (N×2D) and of ``queue`` (K×2D) holds the two heads'
    embeddings side by side, [g_p | g_n]; each half is L2-normalised here. Row i of ``key``
    is the positive of row i of ``query``; the queue holds the negatives. Mean over N.
    """
    (q_p, q_n), (k_p, k_n), (m_p, m_n) = _heads(query), _heads(key), _heads(queue)
    cos_p, cos_n = _cosines(q_p, k_p, m_p), _cosines(q_n, k_n, m_n)
    positive_first = torch.zeros(len(query), dtype=torch.long, device=query.device)
    nce_jaccard, nce_p, nce_n = (
        F.cross_entropy(logits / temperature, positive_first)
        for logits in (jaccard_similarity(cos_p, cos_n), cos_p, cos_n)
    )
    w_jaccard, w_p, w_n = weights
    return w_jaccard * nce_jaccard + w_p * nce_p + w_n * nce_n
