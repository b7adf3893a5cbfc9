"""The self-supervised distillation losses (SEED, CompRess, DisCo, SimReg, BINGO) against
loop-by-loop transcriptions of the papers' equations and against transcriptions of the
authors' code (their tensor layout: queues as D×K buffers, einsum logits, their reductions),
in value and in gradient w.r.t. the student's inputs."""

import math

import pytest
import torch
import torch.nn.functional as F

from fastssl.losses.distillation import (
    bingo_bag_loss,
    bingo_loss,
    compress_1q_loss,
    compress_2q_loss,
    disco_distillation,
    seed_loss,
    simreg_loss,
)
from fastssl.losses.infonce import queue_info_nce


def unit(v):
    return v / torch.sqrt((v * v).sum())


def inputs(seed, n=4, k=6, d=5, students=1, teachers=1, queues=1):
    """``students`` fp64 student batches (with gradients), then ``teachers`` teacher batches,
    then ``queues`` K×D queues of unit vectors."""
    g = torch.Generator().manual_seed(seed)
    s = [torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(students)]
    t = [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(teachers)]
    q = [F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1) for _ in range(queues)]
    return s + t + q


def assert_same_value_and_gradient(loss, reference, students):
    torch.testing.assert_close(loss.double(), reference, atol=1e-6, rtol=1e-6)
    grads = torch.autograd.grad(loss, students)
    ref_grads = torch.autograd.grad(reference, students)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad.double(), ref_grad, atol=1e-6, rtol=1e-5)


# --- the papers' equations, one image and one candidate at a time -------------------------


def seed_eq(s, t, queue, tau_s, tau_t):
    """Fang et al. 2021, Eq. 4–6: D⁺ = [t_i, d_1 … d_K]; −Σ_j p^T_j log p^S_j, mean over i."""
    total = 0.0
    for i in range(len(s)):
        candidates = [unit(t[i])] + [unit(d) for d in queue]
        teacher = [torch.exp(unit(t[i]) @ c / tau_t) for c in candidates]
        student = [torch.exp(unit(s[i]) @ c / tau_s) for c in candidates]
        for pt, ps in zip(teacher, student, strict=True):
            total = total - (pt / sum(teacher)).detach() * torch.log(ps / sum(student))
    return total / len(s)


def compress_eq(s, t, student_anchors, teacher_anchors, tau):
    """Abbasi Koohpayegani et al. 2020, §3: KL(p^T ‖ p^S) over the anchors, mean over i."""
    total = 0.0
    for i in range(len(s)):
        teacher = [torch.exp(unit(t[i]) @ unit(a) / tau) for a in teacher_anchors]
        student = [torch.exp(unit(s[i]) @ unit(a) / tau) for a in student_anchors]
        for pt, ps in zip(teacher, student, strict=True):
            p = (pt / sum(teacher)).detach()
            total = total + p * torch.log(p / (ps / sum(student)))
    return total / len(s)


def disco_eq(s, t):
    """Gao et al. 2022: Σ_i ‖s_i/‖s_i‖ − t_i/‖t_i‖‖², element by element."""
    total = 0.0
    for i in range(len(s)):
        a, b = unit(s[i]), unit(t[i]).detach()
        total = total + sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    return total


def simreg_eq(p, t):
    """Navaneet et al. 2021: (1/N) Σ_i ‖p̄_i − t̄_i‖², element by element."""
    return disco_eq(p, t) / len(p)


def info_nce_eq(s, t, queue, tau):
    """MoCo's InfoNCE of each s_i with positive t_i against the queue, mean over i."""
    total = 0.0
    for i in range(len(s)):
        positive = torch.exp(unit(s[i]) @ unit(t[i]).detach() / tau)
        negatives = sum(torch.exp(unit(s[i]) @ unit(d) / tau) for d in queue)
        total = total - torch.log(positive / (positive + negatives))
    return total / len(s)


def bingo_eq(s_anchor, s_member, t_anchor, queue, tau):
    """Xu et al. 2022, §3: L_intra(S(x_a), T(x_a′)) + L_inter(S(x_p), T(x_a′))."""
    return info_nce_eq(s_anchor, t_anchor, queue, tau) + info_nce_eq(s_member, t_anchor, queue, tau)


# --- the authors' code, in its own layout ----------------------------------------------------


def seed_code(s, t, queue, t_student, temp):
    """seed/builder.py SEED.forward L86–108 and tools/utils.py soft_cross_entropy L188–194,
    the queue a dim×K buffer."""
    s_emb, t_emb = F.normalize(s, dim=1), F.normalize(t, dim=1)
    buffer = queue.T.clone()
    logit_stu = torch.einsum("nc,ck->nk", [s_emb, buffer])
    logit_tea = torch.einsum("nc,ck->nk", [t_emb, buffer])
    logit_s_p = torch.einsum("nc,nc->n", [s_emb, t_emb]).unsqueeze(-1)
    logit_t_p = torch.einsum("nc,nc->n", [t_emb, t_emb]).unsqueeze(-1)
    logit_stu = torch.cat([logit_s_p, logit_stu], dim=1) / t_student
    logit_tea = F.softmax(torch.cat([logit_t_p, logit_tea], dim=1) / temp, dim=1)
    return -(logit_tea * F.log_softmax(logit_stu, 1)).sum() / logit_stu.shape[0]


def compress_code(s, t, student_memory, teacher_memory, temperature):
    """nn/compress_loss.py: Normalize (L166–175), SampleSimilarities.forward (L46–52, the
    memory K×dim, read before its push) and KLD (L178–183)."""

    def l2norm(x):
        return x.div(x.pow(2).sum(1, keepdim=True).pow(0.5))

    def similarities(memory, q):
        return torch.div(torch.mm(memory.clone().detach(), q.transpose(1, 0)).transpose(0, 1), temperature)

    targets = similarities(teacher_memory, l2norm(t))
    inputs_ = similarities(student_memory, l2norm(s))
    return F.kl_div(F.log_softmax(inputs_, dim=1), F.softmax(targets, dim=1), reduction="batchmean")


def disco_code(student_q, teacher_q, student_qk, teacher_qk):
    """DisCo/main.py L263 and L436–442: MSELoss(reduction='sum') per view, the views added; the
    embeddings normalised as builder_kq_mse_largeembedding_2048.py L183–207 has them."""
    criterion_mse = torch.nn.MSELoss(reduction="sum")
    norm = lambda x: F.normalize(x, dim=1)
    return criterion_mse(norm(teacher_q), norm(student_q)) + criterion_mse(norm(teacher_qk), norm(student_qk))


def simreg_code(prediction, target):
    """simreg.py SimReg.forward L100, L116, L129–130."""
    query, current_target = F.normalize(prediction, dim=1), F.normalize(target, dim=1)
    return (2 - 2 * torch.einsum("bc,bc->b", [query, current_target])).mean()


def bingo_code(q, add_posq, mix_q, k, add_posk, queue, mix_lam, tau, lam):
    """moco/builder.py MoCo.forward L142–197 with logits_q_nk (L200–206), main_moco.py
    MulposCrossEntropy (L106–126) and the loop of L371–387, the queue a dim×K buffer."""
    n, dim = q.shape
    norm = lambda x: F.normalize(x, dim=1)
    all_q = torch.cat([norm(q).unsqueeze(1), norm(add_posq).reshape(n, 1, dim)], dim=1)
    all_k = torch.cat([norm(k).unsqueeze(1), norm(add_posk).reshape(n, 1, dim)], dim=1)
    buffer = queue.T.clone()

    def logits_q_nk(query, keys, neg):
        pos = torch.einsum("nmc,nc->nm", [keys, query]).unsqueeze(-1)
        negative = torch.einsum("nc,ck->nk", [query, neg.clone().detach()]).unsqueeze(1).repeat(1, 2, 1)
        return torch.cat([pos, negative], dim=2) / tau

    def mulpos_cross_entropy(logits, weights):
        target = torch.zeros(len(logits), dtype=torch.long)
        return sum(weights[i] * F.cross_entropy(logits[:, i], target) for i in range(logits.size(1)))

    output = [logits_q_nk(all_q[:, i], all_k, buffer) for i in range(2)]
    mix_out = logits_q_nk(norm(mix_q), all_k, buffer)
    loss = 0.0
    for out_idx in range(len(output)):
        soft_lam = [lam[0] if j == out_idx else lam[1] for j in range(2)]
        loss = loss + mulpos_cross_entropy(output[out_idx], soft_lam)
    loss = loss + mulpos_cross_entropy(mix_out, [mix_lam, 1 - mix_lam])
    return loss / 3


# --- SEED -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, tau_s, tau_t", [(0, 0.2, 0.05), (1, 0.5, 0.5), (2, 0.1, 0.2)])
def test_seed_loss_matches_the_equation(seed, tau_s, tau_t):
    s, t, queue = inputs(seed)
    assert_same_value_and_gradient(seed_loss(s, t, queue, tau_s, tau_t), seed_eq(s, t, queue, tau_s, tau_t), [s])


@pytest.mark.parametrize("seed", [3, 4])
def test_seed_loss_matches_the_authors_code_at_its_defaults(seed):
    s, t, queue = inputs(seed, n=6, k=10, d=8)
    assert_same_value_and_gradient(seed_loss(s, t, queue), seed_code(s, t, queue, 0.2, 1e-4), [s])


def test_seed_loss_is_the_teachers_entropy_when_the_student_matches_it():
    """With τ_S = τ_T, p^S = p^T at s = t: the cross-entropy is H(p^T), its minimum (Gibbs),
    and the gradient vanishes."""
    s, t, queue = inputs(5, n=5, k=8)
    tau = 0.3
    student = t.clone().requires_grad_()
    loss = seed_loss(student, t, queue, tau, tau)
    logits = torch.cat([torch.ones(len(t), 1, dtype=t.dtype), F.normalize(t, dim=1) @ queue.T], dim=1) / tau
    entropy = -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(loss, entropy)
    (grad,) = torch.autograd.grad(loss, student)
    torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-12, rtol=0)
    assert seed_loss(s, t, queue, tau, tau) > entropy


# --- CompRess ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, tau", [(0, 0.04), (1, 0.1), (2, 0.5)])
def test_compress_losses_match_the_equation(seed, tau):
    s, t, student_queue, teacher_queue = inputs(seed, queues=2)
    assert_same_value_and_gradient(
        compress_1q_loss(s, t, teacher_queue, tau), compress_eq(s, t, teacher_queue, teacher_queue, tau), [s]
    )
    assert_same_value_and_gradient(
        compress_2q_loss(s, t, student_queue, teacher_queue, tau),
        compress_eq(s, t, student_queue, teacher_queue, tau), [s],
    )


def test_compress_losses_match_the_authors_code_at_its_default():
    s, t, student_queue, teacher_queue = inputs(3, n=6, k=12, d=8, queues=2)
    assert_same_value_and_gradient(compress_1q_loss(s, t, teacher_queue), compress_code(s, t, teacher_queue,
                                                                                       teacher_queue, 0.04), [s])
    assert_same_value_and_gradient(compress_2q_loss(s, t, student_queue, teacher_queue),
                                   compress_code(s, t, student_queue, teacher_queue, 0.04), [s])


def test_compress_2q_allows_different_student_and_teacher_dimensions():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t, teacher_queue = torch.randn(4, 7, generator=g, dtype=torch.float64), torch.randn(9, 7, generator=g,
                                                                                        dtype=torch.float64)
    student_queue = torch.randn(9, 3, generator=g, dtype=torch.float64)
    assert_same_value_and_gradient(compress_2q_loss(s, t, student_queue, teacher_queue, 0.1),
                                   compress_eq(s, t, student_queue, teacher_queue, 0.1), [s])


def test_compress_kl_is_zero_for_equal_inputs_and_positive_otherwise():
    s, t, student_queue, teacher_queue = inputs(5, queues=2)
    student = t.clone().requires_grad_()
    for loss in (compress_1q_loss(student, t, teacher_queue), compress_2q_loss(student, t, teacher_queue,
                                                                               teacher_queue)):
        torch.testing.assert_close(loss, torch.zeros((), dtype=loss.dtype), atol=1e-12, rtol=0)
        (grad,) = torch.autograd.grad(loss, student)
        torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-10, rtol=0)
    assert compress_1q_loss(s, t, teacher_queue) > 0
    assert compress_2q_loss(s, t, student_queue, teacher_queue) > 0


# --- DisCo ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_disco_distillation_matches_the_equation(seed):
    s, t = inputs(seed, queues=0)
    assert_same_value_and_gradient(disco_distillation(s, t), disco_eq(s, t), [s])
    assert_same_value_and_gradient(disco_distillation(s, t, "mean"), disco_eq(s, t) / len(s), [s])


def test_disco_distillation_on_both_views_stacked_is_the_authors_code():
    s1, s2, t1, t2 = inputs(3, n=5, d=7, students=2, teachers=2, queues=0)
    loss = disco_distillation(torch.cat([s1, s2]), torch.cat([t1, t2]))
    assert_same_value_and_gradient(loss, disco_code(s1, t1, s2, t2), [s1, s2])


def test_disco_distillation_is_zero_for_aligned_embeddings():
    _, t = inputs(4, queues=0)
    student = (3 * t).requires_grad_()
    loss = disco_distillation(student, t)
    torch.testing.assert_close(loss, torch.zeros((), dtype=loss.dtype), atol=1e-12, rtol=0)


# --- SimReg -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simreg_loss_matches_the_equation_and_the_authors_code(seed):
    p, t = inputs(seed, queues=0)
    assert_same_value_and_gradient(simreg_loss(p, t), simreg_eq(p, t), [p])
    assert_same_value_and_gradient(simreg_loss(p, t), simreg_code(p, t), [p])


def test_simreg_loss_spans_zero_to_four():
    _, t = inputs(3, queues=0)
    torch.testing.assert_close(simreg_loss(2 * t, t), torch.zeros((), dtype=t.dtype), atol=1e-12, rtol=0)
    torch.testing.assert_close(simreg_loss(-t, t), torch.full((), 4.0, dtype=t.dtype))


# --- BINGO ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, tau", [(0, 0.2), (1, 0.07), (2, 0.5)])
def test_bingo_loss_matches_the_equation(seed, tau):
    s_a, s_p, t_a, queue = inputs(seed, students=2)
    loss = bingo_loss(s_a, s_p, t_a, queue, tau, backend="plain")
    assert_same_value_and_gradient(loss, bingo_eq(s_a, s_p, t_a, queue, tau), [s_a, s_p])


@pytest.mark.parametrize("seed, weights, mix", [(3, (0.5, 0.5), 0.7), (4, (1.0, 0.0), 0.25), (5, (0.8, 0.3), 1.0)])
def test_bingo_bag_loss_matches_the_authors_code(seed, weights, mix):
    s_a, s_p, s_m, t_a, t_p, queue = inputs(seed, n=5, k=9, d=6, students=3, teachers=2)
    loss = bingo_bag_loss(s_a, s_p, s_m, t_a, t_p, queue, mix, 0.2, weights, backend="plain")
    reference = bingo_code(s_a, s_p, s_m, t_a, t_p, queue, mix, 0.2, weights)
    assert_same_value_and_gradient(loss, reference, [s_a, s_p, s_m])


def test_bingo_bag_loss_with_the_anchors_teacher_as_the_members_is_the_paper_loss_plus_the_mix():
    """With t_p = t_a and weights summing to 1, each student embedding has the single positive
    t_a: L = (L_intra + L_inter + NCE(s_m, t_a)) / 3."""
    s_a, s_p, s_m, t_a, queue = inputs(6, students=3)
    loss = bingo_bag_loss(s_a, s_p, s_m, t_a, t_a, queue, 0.4, weights=(0.3, 0.7))
    expected = (bingo_loss(s_a, s_p, t_a, queue) + queue_info_nce(s_m, t_a, queue, 0.2)) / 3
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(bingo_loss(s_a, s_a, t_a, queue), 2 * queue_info_nce(s_a, t_a, queue, 0.2))


# --- all of them ------------------------------------------------------------------------------


def all_losses(students, teachers, queues):
    s_a, s_p, s_m = students
    t_a, t_p = teachers
    q_s, q_t = queues
    return {
        "seed": seed_loss(s_a, t_a, q_t),
        "compress_1q": compress_1q_loss(s_a, t_a, q_t),
        "compress_2q": compress_2q_loss(s_a, t_a, q_s, q_t),
        "disco": disco_distillation(s_a, t_a),
        "simreg": simreg_loss(s_a, t_a),
        "bingo": bingo_loss(s_a, s_p, t_a, q_t),
        "bingo_bag": bingo_bag_loss(s_a, s_p, s_m, t_a, t_p, q_t, 0.6),
    }


def test_no_gradient_reaches_the_teacher_or_the_queues():
    *students, t_a, t_p, q_s, q_t = inputs(7, students=3, teachers=2, queues=2)
    teachers = [t_a.requires_grad_(), t_p.requires_grad_()]
    queues = [q_s.requires_grad_(), q_t.requires_grad_()]
    for name, loss in all_losses(students, teachers, queues).items():
        grads = torch.autograd.grad(loss, teachers + queues, allow_unused=True, retain_graph=True)
        assert all(g is None for g in grads), name
        assert torch.autograd.grad(loss, students[0])[0].abs().sum() > 0, name


def test_bf16_inputs_are_upcast():
    g = torch.Generator().manual_seed(8)
    students = [torch.randn(8, 16, generator=g) for _ in range(3)]
    teachers = [torch.randn(8, 16, generator=g) for _ in range(2)]
    queues = [F.normalize(torch.randn(1024, 16, generator=g), dim=1) for _ in range(2)]
    full = all_losses(students, teachers, queues)
    half = all_losses(*([x.bfloat16() for x in group] for group in (students, teachers, queues)))
    for name in full:
        assert half[name].dtype == torch.float32, name
        assert math.isfinite(half[name].item()), name
        assert abs(full[name].item() - half[name].item()) < 0.05 * full[name].item() + 1e-3, name
