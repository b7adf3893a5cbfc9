"""DINO's loss — "Emerging Properties in Self-Supervised Vision Transformers" (Caron et
al., 2021), Eq. 1 and 3 and Algorithm 1, in fp32 (softmaxes over thousands of outputs at
temperatures of 0.04–0.1)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from fastssl.losses.precision import at_least_fp32
from fastssl.losses.swav import swapped_prediction


def dino_loss(
    student: Tensor,
    teacher: Tensor,
    center: Tensor,
    student_temperature: float | Tensor,
    teacher_temperature: float | Tensor,
) -> Tensor:
    """H(P_t(x), P_s(x')) = −Σ_k P_t(x)^(k) log P_s(x')^(k) (Eq. 1), where

        P_s = softmax(g_s / τ_s),   P_t = softmax((g_t − C) / τ_t)

    — the teacher's output centred by C and sharpened by τ_t < τ_s, with no gradient —
    averaged over every teacher view x ∈ {x₁ᵍ, x₂ᵍ} and every student view x' ≠ x (Eq. 3:
    the global views against each other and against all local views).

    ``student``: V×N×K outputs of V views (the G global views first); ``teacher``: G×N×K
    outputs of the global views; ``center``: K. This is SwAV's swapped prediction with the
    teacher's distribution as the codes, so it is computed by ``swapped_prediction``.
    """
    targets = F.softmax((at_least_fp32(teacher.detach()) - at_least_fp32(center)) / teacher_temperature, dim=2)
    return swapped_prediction(student, targets, student_temperature)
