"""InfoNCE-family contrastive losses. Inputs are projections; they are L2-normalised and
upcast to fp32 here, since the log-sum-exp over thousands of logits loses precision in bf16.

Each loss is the mean over queries of LSE_i − s_i⁺ (log-sum-exp of the logits minus the
positive's logit). The log-sum-exp is computed by ``backend``: ``plain`` (the whole logit
matrix), ``chunked`` (column chunks, recomputed in backward: memory O(N·chunk)), ``fused``
(Triton, tiles in registers, TF32 similarity products, CUDA) or ``auto`` (fused on CUDA
where Triton runs, else plain) — see ``fastssl/kernels/contrastive.py``.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from fastssl.kernels.contrastive import chunked_lse, fused_available, fused_lse, plain_lse
from fastssl.losses.precision import at_least_fp32

Backend = Literal["auto", "plain", "chunked", "fused"]


def unit(x: Tensor) -> Tensor:
    """``x`` upcast to fp32 and L2-normalised along its last dimension (the embeddings every
    similarity-based loss compares)."""
    return F.normalize(at_least_fp32(x), dim=-1)


def log_sum_exp(
    q: Tensor, c: Tensor, temperature: float, extra: Tensor | None = None, exclude: Tensor | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Per row i: log(e^{extra_i} + Σ_{j ≠ exclude_i} exp(q_i·c_j/τ)), by ``backend``."""
    if backend == "auto":
        backend = "fused" if q.is_cuda and fused_available(q) else "plain"
    if backend == "fused" and not fused_available(q):
        raise ValueError("the fused InfoNCE kernel needs Triton, a CUDA device and embeddings of ≤ 256 dimensions")
    function = {"plain": plain_lse, "chunked": chunked_lse, "fused": fused_lse}[backend]
    return function(q, c, temperature, extra, exclude)


def queue_info_nce(query: Tensor, key: Tensor, queue: Tensor, temperature: float, backend: Backend = "auto") -> Tensor:
    """MoCo (He et al., 2020), Eq. 1, with a queue of negatives:

        L_q = −log exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_{k₋ ∈ queue} exp(q·k₋/τ))

    ``query``, ``key``: N×D, row i of ``key`` is the positive of row i of ``query``;
    ``queue``: K×D negatives. Mean over the N queries.
    """
    q, k, negatives = unit(query), unit(key), unit(queue)
    positive = (q * k).sum(1) / temperature
    return (log_sum_exp(q, negatives, temperature, extra=positive, backend=backend) - positive).mean()


def batch_info_nce(
    query: Tensor, keys: Tensor, temperature: float, offset: int = 0, backend: Backend = "auto"
) -> Tensor:
    """InfoNCE with in-batch negatives, one direction (Mini-SSL's SimCLR):

        L_i = −log exp(q_i·k_{i+offset}/τ) / Σ_j exp(q_i·k_j/τ)

    ``query``: N×D; ``keys``: M×D from the other view (all processes' keys, this process's
    starting at ``offset``). No same-view negatives: N×M logits, not 2N×2N.
    """
    q, k = unit(query), unit(keys)
    positive = (q * k[offset : offset + len(q)]).sum(1) / temperature
    return (log_sum_exp(q, k, temperature, backend=backend) - positive).mean()


def nt_xent(
    anchors: Tensor, candidates: Tensor, self_index: Tensor, positive_index: Tensor, temperature: float,
    backend: Backend = "auto",
) -> Tensor:
    """SimCLR's NT-Xent (Chen et al., 2020), Eq. 1:

        ℓ(i, j) = −log exp(sim(z_i, z_j)/τ) / Σ_{k ≠ i} exp(sim(z_i, z_k)/τ)

    ``anchors``: the 2n local projections of both views; ``candidates``: the 2N
    projections of every process; ``self_index`` / ``positive_index``: where each anchor
    and its other view sit among the candidates. Each anchor has 2N − 2 negatives.
    """
    a, c = unit(anchors), unit(candidates)
    positive = (a * c[positive_index]).sum(1) / temperature
    return (log_sum_exp(a, c, temperature, exclude=self_index, backend=backend) - positive).mean()
