"""DINO's loss against a transcription of Eq. 1 and 3 (Caron et al., 2021) with explicit
loops over the pairs of views."""

import math

import torch

from fastssl.losses.dino import dino_loss


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def paper_dino_loss(student, teacher, center, tau_s, tau_t):
    """Σ over teacher global views x and student views x' ≠ x of H(P_t(x), P_s(x')),
    averaged over the pairs and the images; P_t centred and sharpened, P_s a plain softmax."""
    views, n, k = student.shape
    teacher = teacher.detach()
    total, pairs = 0.0, 0
    for g in range(teacher.shape[0]):
        for v in range(views):
            if v == g:
                continue
            loss = 0.0
            for i in range(n):
                p_t = softmax([(teacher[g, i, j].item() - center[j].item()) / tau_t for j in range(k)])
                denominator = sum(torch.exp(student[v, i, j] / tau_s) for j in range(k))
                loss = loss - sum(p_t[j] * torch.log(torch.exp(student[v, i, j] / tau_s) / denominator)
                                  for j in range(k))
            total, pairs = total + loss / n, pairs + 1
    return total / pairs


def test_dino_loss_matches_the_equation_over_view_pairs():
    g = torch.Generator().manual_seed(0)
    for views in (2, 5):  # no local crops, or three
        student = torch.randn(views, 3, 6, generator=g, dtype=torch.float64).requires_grad_()
        teacher = torch.randn(2, 3, 6, generator=g, dtype=torch.float64).requires_grad_()
        center = torch.randn(6, generator=g, dtype=torch.float64)
        loss = dino_loss(student, teacher, center, 0.1, 0.04)
        expected = paper_dino_loss(student, teacher, center, 0.1, 0.04)
        assert abs(loss.item() - expected.item()) < 1e-5
        grad_student, grad_teacher = torch.autograd.grad(loss, [student, teacher], allow_unused=True)
        (expected_grad,) = torch.autograd.grad(expected, student)
        torch.testing.assert_close(grad_student.double(), expected_grad, rtol=1e-4, atol=1e-6)
        assert grad_teacher is None  # the teacher's distribution is a target, without gradient


def test_centring_and_sharpening_change_the_target_as_the_equation_says():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 4, 5, generator=g), torch.randn(2, 4, 5, generator=g)
    center = torch.randn(5, generator=g)
    # Centring by C equals shifting the teacher's outputs by −C; a tensor temperature works as a float.
    torch.testing.assert_close(dino_loss(student, teacher, center, 0.1, 0.07),
                               dino_loss(student, teacher - center, torch.zeros(5), 0.1, torch.tensor(0.07)))
    # An all-equal centre changes nothing (softmax is shift-invariant).
    torch.testing.assert_close(dino_loss(student, teacher, torch.full((5,), 3.0), 0.1, 0.07),
                               dino_loss(student, teacher, torch.zeros(5), 0.1, 0.07))
    assert dino_loss(student.bfloat16(), teacher.bfloat16(), center, 0.1, 0.04).dtype == torch.float32
