"""InfoNCE-family contrastive losses. Inputs are projections; they are L2-normalised and
upcast to fp32 here, since the log-sum-exp over thousands of logits loses precision in bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x.float(), dim=1)


def queue_info_nce(query: Tensor, key: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo (He et al., 2020), Eq. 1, with a queue of negatives:

        L_q = −log exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_{k₋ ∈ queue} exp(q·k₋/τ))

    ``query``, ``key``: N×D, row i of ``key`` is the positive of row i of ``query``;
    ``queue``: K×D negatives. Mean over the N queries.
    """
    q, k, negatives = _unit(query), _unit(key), _unit(queue)
    positive = (q * k).sum(1, keepdim=True)
    logits = torch.cat([positive, q @ negatives.T], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def batch_info_nce(query: Tensor, keys: Tensor, temperature: float, offset: int = 0) -> Tensor:
    """InfoNCE with in-batch negatives, one direction (Mini-SSL's SimCLR):

        L_i = −log exp(q_i·k_{i+offset}/τ) / Σ_j exp(q_i·k_j/τ)

    ``query``: N×D; ``keys``: M×D from the other view (all processes' keys, this process's
    starting at ``offset``). No same-view negatives: N×M logits, not 2N×2N.
    """
    q, k = _unit(query), _unit(keys)
    logits = q @ k.T / temperature
    target = torch.arange(len(q), device=q.device) + offset
    return F.cross_entropy(logits, target)


def nt_xent(
    anchors: Tensor, candidates: Tensor, self_index: Tensor, positive_index: Tensor, temperature: float
) -> Tensor:
    """SimCLR's NT-Xent (Chen et al., 2020), Eq. 1:

        ℓ(i, j) = −log exp(sim(z_i, z_j)/τ) / Σ_{k ≠ i} exp(sim(z_i, z_k)/τ)

    ``anchors``: the 2n local projections of both views; ``candidates``: the 2N
    projections of every process; ``self_index`` / ``positive_index``: where each anchor
    and its other view sit among the candidates. Each anchor has 2N − 2 negatives.
    """
    a, c = _unit(anchors), _unit(candidates)
    logits = a @ c.T / temperature
    logits = logits.scatter(1, self_index[:, None], float("-inf"))
    return F.cross_entropy(logits, positive_index)
