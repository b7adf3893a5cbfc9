"""ReSSL's and SCE's losses against loop-by-loop transcriptions of the papers' equations."""

import pytest
import torch

from fastssl.losses.infonce import queue_info_nce
from fastssl.losses.relational import ressl_loss, sce_loss, sce_target


def unit(v):
    return v / torch.sqrt((v * v).sum())


def ressl_eq(q, k, memory, tau_s, tau_t):
    """Zheng et al. 2021, Eq. 4–5: H(p(k, τ_t), p(q, τ_s)) over the memory, one slot at a time."""
    total = 0.0
    for i in range(len(q)):
        teacher = [torch.exp(unit(k[i]) @ unit(m) / tau_t) for m in memory]
        student = [torch.exp(unit(q[i]) @ unit(m) / tau_s) for m in memory]
        for t, s in zip(teacher, student, strict=True):
            total = total - t.detach() / sum(teacher).detach() * torch.log(s / sum(student))
    return total / len(q)


def sce_eq(q, k, memory, tau, tau_m, lam, masked=True):
    """Denize et al. 2023, Eq. 5–7, candidates c = [k_i, memory]: w² masks j = positive
    (Eq. 5), w = λ·1[j = +] + (1 − λ)·w² (Eq. 6), L = −Σ_j w_j log s_j (Eq. 7). With
    ``masked`` False the positive's teacher similarity is 0 instead, as SCE's and Mini-SSL's
    code have it (network/SCE.py at 4a82212: ``sim_k_ktarget = torch.zeros(batch_size)``)."""
    total = 0.0
    for i in range(len(q)):
        candidates = [k[i]] + list(memory)
        relation = [torch.exp(unit(k[i]) @ unit(c) / tau_m) for c in candidates]
        if not masked:
            relation[0] = torch.exp(torch.zeros((), dtype=q.dtype) / tau_m)
        total_relation = sum(r for j, r in enumerate(relation) if j != 0 or not masked)
        student = [torch.exp(unit(q[i]) @ unit(c) / tau) for c in candidates]
        for j in range(len(candidates)):
            w2 = 0.0 if j == 0 and masked else (relation[j] / total_relation).detach()
            w = lam * (j == 0) + (1 - lam) * w2
            total = total - w * torch.log(student[j] / sum(student))
    return total / len(q)


def inputs(seed, n=4, k=6, d=5):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    return q, torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(k, d, generator=g, dtype=torch.float64)


def assert_same_value_and_gradient(loss, reference, q):
    torch.testing.assert_close(loss.double(), reference, atol=1e-5, rtol=1e-5)
    (grad,) = torch.autograd.grad(loss, q)
    (ref_grad,) = torch.autograd.grad(reference, q)
    torch.testing.assert_close(grad.double(), ref_grad, atol=1e-5, rtol=1e-4)


def test_ressl_loss_matches_the_equation():
    q, k, memory = inputs(0)
    assert_same_value_and_gradient(ressl_loss(q, k, memory, 0.1, 0.04), ressl_eq(q, k, memory, 0.1, 0.04), q)


def test_ressl_loss_gives_the_teacher_no_gradient():
    q, k, memory = inputs(1)
    k.requires_grad_(), memory.requires_grad_()
    loss = ressl_loss(q, k, memory, 0.1, 0.04)
    assert torch.autograd.grad(loss, [k, memory], allow_unused=True) == (None, None)
    assert torch.autograd.grad(loss, q)[0].abs().sum() > 0


@pytest.mark.parametrize("positive_relation", ["masked", "zero"])
def test_sce_loss_matches_the_equation(positive_relation):
    for lam in (0.0, 0.5, 1.0):
        q, k, memory = inputs(2)
        loss = sce_loss(q, k, memory, 0.1, 0.5, lam, positive_relation)  # τ_m 0.5: the positive's slot counts
        reference = sce_eq(q, k, memory, 0.1, 0.5, lam, masked=positive_relation == "masked")
        assert_same_value_and_gradient(loss, reference, q)


def test_sce_target_rows_sum_to_one_and_the_masked_positive_gets_lambda():
    _, k, memory = inputs(3, n=8, k=20)
    target = sce_target(k, memory, 0.05, 0.3, "masked")
    assert target.shape == (8, 21)
    torch.testing.assert_close(target.sum(1), torch.ones(8, dtype=target.dtype))
    # λ + (1 − λ)·0: the positive's similarity to itself takes no relational mass.
    torch.testing.assert_close(target[:, 0], torch.full((8,), 0.3, dtype=target.dtype))
    relation = torch.softmax(torch.nn.functional.normalize(k, dim=1) @ torch.nn.functional.normalize(memory, dim=1).T
                             / 0.05, dim=1)
    torch.testing.assert_close(target[:, 1:], 0.7 * relation)
    k.requires_grad_()
    assert not sce_target(k, memory, 0.05, 0.3).requires_grad


def test_sce_with_a_one_hot_target_is_moco():
    q, k, memory = inputs(4, n=6, k=9)
    torch.testing.assert_close(sce_loss(q, k, memory, 0.2, 0.05, 1.0), queue_info_nce(q, k, memory, 0.2, "plain"))


def test_bf16_inputs_are_upcast():
    g = torch.Generator().manual_seed(5)
    q, k, memory = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g), torch.randn(4096, 16, generator=g)
    for loss in (lambda *x: ressl_loss(*x, 0.1, 0.04), lambda *x: sce_loss(*x, 0.1, 0.05, 0.5)):
        full = loss(q, k, memory)
        half = loss(q.bfloat16(), k.bfloat16(), memory.bfloat16())
        assert half.dtype == torch.float32
        assert abs(full.item() - half.item()) < 0.05 * full.item()
