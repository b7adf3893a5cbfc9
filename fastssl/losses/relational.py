"""Relational losses: the student matches a teacher's distribution of similarities to a
memory of past teacher embeddings, instead of (ReSSL) or besides (SCE) singling out its
positive. Inputs are projections; they are L2-normalised and upcast to fp32 here, since a
softmax over thousands of memory slots at τ = 0.04 loses precision in bf16. The teacher
side (key and memory) is a target: no gradient reaches it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fastssl.losses.infonce import unit


def ressl_loss(query: Tensor, key: Tensor, memory: Tensor, temperature: float, teacher_temperature: float) -> Tensor:
    """ReSSL (Zheng et al., 2021), Eq. 4–5: the relation of an embedding z to the memory
    {m_1 … m_K} is p_i(z, τ) = exp(z·m_i/τ) / Σ_j exp(z·m_j/τ), and

        L = −Σ_i p_i(k, τ_t) · log p_i(q, τ_s)

    the cross-entropy from the teacher's relation of ``key`` (sharpened: τ_t < τ_s) to the
    student's of ``query``. The relation is over the memory only: the positive is not in it.
    ``query``, ``key``: N×D, row i of ``key`` from the other view of row i's image;
    ``memory``: K×D. Mean over the N queries.
    """
    q, k, m = unit(query), unit(key).detach(), unit(memory).detach()
    target = F.softmax(k @ m.T / teacher_temperature, dim=1)
    return -(target * F.log_softmax(q @ m.T / temperature, dim=1)).sum(1).mean()


def sce_target(
    key: Tensor, memory: Tensor, teacher_temperature: float, coefficient: float,
    positive_relation: Literal["zero", "masked"] = "zero",
) -> Tensor:
    """SCE (Denize et al., 2023), Eq. 5–6: the target over the candidates [k, m_1 … m_K],

        w_+ = λ + (1 − λ)·r_+,   w_i = (1 − λ)·r_i,   r = softmax([s_+, k·m_1 … k·m_K] / τ_m)

    λ on the positive (the one-hot, Eq. 6) plus 1 − λ spread by the teacher's relation r.
    The positive's own teacher similarity s_+: ``"zero"`` puts 0 there, as SCE's and
    Mini-SSL's code do (``sim_k_ktarget = zeros``), which leaves it e^0/Z of the relational
    mass (negligible at τ_m 0.05 against thousands of memory slots); ``"masked"`` gives it
    none (Eq. 5's 1_{i≠k}). Each row sums to 1. N×(1+K), no gradient.
    """
    k, m = unit(key).detach(), unit(memory).detach()
    similarities = k @ m.T
    if positive_relation == "zero":
        similarities = torch.cat([torch.zeros_like(similarities[:, :1]), similarities], dim=1)
    relation = F.softmax(similarities / teacher_temperature, dim=1)
    if positive_relation == "masked":
        relation = torch.cat([torch.zeros_like(relation[:, :1]), relation], dim=1)
    one_hot = torch.zeros_like(relation)
    one_hot[:, 0] = 1.0
    return coefficient * one_hot + (1 - coefficient) * relation


def sce_loss(
    query: Tensor, key: Tensor, memory: Tensor, temperature: float, teacher_temperature: float, coefficient: float,
    positive_relation: Literal["zero", "masked"] = "zero",
) -> Tensor:
    """SCE (Denize et al., 2023), Eq. 5–7: the cross-entropy from ``sce_target`` to the
    student's softmax over the same candidates,

        s_+ = exp(q·k/τ) / Z,   s_i = exp(q·m_i/τ) / Z,   L = −(w_+ log s_+ + Σ_i w_i log s_i)

    λ = 1 is MoCo's InfoNCE; λ = 0 with ``"masked"`` is ReSSL's relation with the positive
    among the candidates. ``query``, ``key``: N×D; ``memory``: K×D. Mean over the N queries.
    """
    q, k, m = unit(query), unit(key).detach(), unit(memory).detach()
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ m.T], dim=1) / temperature
    target = sce_target(k, m, teacher_temperature, coefficient, positive_relation)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
