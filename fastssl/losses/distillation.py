"""Self-supervised distillation losses: a small student learns from a frozen, self-supervised
teacher (SEED, CompRess, DisCo, SimReg, BINGO). Inputs are N×D embeddings, L2-normalised and
upcast to fp32 here where the method normalises (a softmax over thousands of queue slots at
τ = 0.04 or 1e-4 loses precision in bf16); queues are K×D unit vectors as
``fastssl.methods.memory.FeatureQueue`` holds them, read before this step's push. The teacher
side (teacher embeddings and queues) is a target: no gradient reaches it.

Each function names the paper's equation and the file of the authors' code it follows (the
newest commit of each repository that could be read: SEED f236cac, CompRess c5e57ed, DisCo
1d732c8, SimReg 2e974e7, BINGO 1c632fc), with the choice made where the two differ.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fastssl.losses.cosine import normalized_l2
from fastssl.losses.infonce import Backend, queue_info_nce, unit


def seed_loss(
    student: Tensor, teacher: Tensor, queue: Tensor, tau_student: float = 0.2, tau_teacher: float = 1e-4
) -> Tensor:
    """SEED (Fang, Wang, Wang, Zhang, Yang & Liu, ICLR 2021), Eq. 4–6: over the candidates
    D⁺ = [t_i, d_1 … d_K] (the image's own teacher embedding, then the queue of past teacher
    embeddings), the teacher's and the student's similarity distributions

        p^T_j = exp(t_i·d_j/τ_T) / Σ_k exp(t_i·d_k/τ_T),   p^S_j = exp(s_i·d_j/τ_S) / Σ_k exp(s_i·d_k/τ_S)

    and L = −Σ_j p^T_j log p^S_j, the cross-entropy, mean over the N images. ``student``,
    ``teacher``: N×D, both of the same view of row i's image; ``queue``: K×D.

    Follows seed/builder.py ``SEED.forward`` (L86–113: both embeddings normalised, the
    positive's logits s·t and t·t put first, the student's logits over τ_S, the teacher's
    softmax at τ_T) and tools/utils.py ``soft_cross_entropy`` (L188–194: sum over the batch
    divided by N). Defaults are the code's: τ_S = 0.2 (tools/opts.py L144–147, ``--temp``;
    README L64) and τ_T = 1e-4 (tools/opts.py L149–152, ``--distill-t``), which makes p^T
    nearly one-hot on the image's own teacher embedding. t·t is computed as the code does
    (1 up to rounding), not set to 1. The queue holds teacher embeddings only (L111).
    """
    s, t, d = unit(student), unit(teacher).detach(), unit(queue).detach()
    student_logits = torch.cat([(s * t).sum(1, keepdim=True), s @ d.T], dim=1) / tau_student
    teacher_logits = torch.cat([(t * t).sum(1, keepdim=True), t @ d.T], dim=1) / tau_teacher
    target = F.softmax(teacher_logits, dim=1)
    return -(target * F.log_softmax(student_logits, dim=1)).sum(1).mean()


def _relation_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean over rows of KL(softmax(teacher_logits) ‖ softmax(student_logits))."""
    return F.kl_div(
        F.log_softmax(student_logits, dim=1), F.log_softmax(teacher_logits, dim=1), reduction="batchmean",
        log_target=True,
    )


def compress_1q_loss(student: Tensor, teacher: Tensor, teacher_queue: Tensor, tau: float = 0.04) -> Tensor:
    """CompRess-1q (Abbasi Koohpayegani, Tejankar & Pirsiavash, NeurIPS 2020), §3, Eq. 1–3
    with the teacher's anchors shared: over the anchors a_1 … a_K of the teacher's queue,

        p^T_j = exp(t_i·a_j/τ) / Σ_k exp(t_i·a_k/τ),   p^S_j = exp(s_i·a_j/τ) / Σ_k exp(s_i·a_k/τ),

    L = KL(p^T ‖ p^S), mean over the N images. ``student``, ``teacher``: N×D (the student's
    embedding has the teacher's dimension, since both meet the same anchors), of the same
    view; ``teacher_queue``: K×D teacher embeddings.

    Follows nn/compress_loss.py ``CompReSSA`` (L89–107, as train_student_one_queue.py L173
    builds it) with ``KLD`` (L178–183: ``kl_div(..., reduction='batchmean')``): both embeddings
    normalised, one temperature for both sides. The current batch is not among its own
    anchors: ``SampleSimilarities.forward`` clones the memory (L48) before pushing the batch
    (L54–62), as reading ``FeatureQueue`` before its push does. τ = 0.04 is the code's default
    (compress_loss.py L91; train_student_one_queue.py L51, ``--compress_t``).
    """
    s, t, a = unit(student), unit(teacher).detach(), unit(teacher_queue).detach()
    return _relation_kl(s @ a.T / tau, t @ a.T / tau)


def compress_2q_loss(
    student: Tensor, teacher: Tensor, student_queue: Tensor, teacher_queue: Tensor, tau: float = 0.04
) -> Tensor:
    """CompRess-2q (Abbasi Koohpayegani, Tejankar & Pirsiavash, NeurIPS 2020), §3, Eq. 1–3:
    each network relates its embedding to its own memory of the same K anchor images,

        p^T_j = exp(t_i·a^T_j/τ) / Σ_k exp(t_i·a^T_k/τ),   p^S_j = exp(s_i·a^S_j/τ) / Σ_k exp(s_i·a^S_k/τ),

    L = KL(p^T ‖ p^S), mean over the N images. Row j of ``student_queue`` and of
    ``teacher_queue`` must embed the same image (push both queues together); the two
    dimensions may differ.

    Follows nn/compress_loss.py ``CompReSSMomentum`` (L143–163, train_student.py L187, the
    paper's main model) and ``CompReSS`` (L67–86, train_student_without_momentum.py L167),
    which differ only in what fills the student's queue: a momentum copy of the student's
    embeddings (L137, L159) or the student's own (L61) — the caller's choice of what it pushes.
    Anchors exclude the current batch (memory cloned, L48, before the push, L54–62); τ = 0.04
    for both (compress_loss.py L145; train_student.py L52, ``--compress_t``).
    """
    s, t = unit(student), unit(teacher).detach()
    a_s, a_t = unit(student_queue).detach(), unit(teacher_queue).detach()
    return _relation_kl(s @ a_s.T / tau, t @ a_t.T / tau)


def disco_distillation(student: Tensor, teacher: Tensor, reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    """DisCo (Gao, Zhuang, Lin, Cheng, Sun, Li & Shen, ECCV 2022), §3, the distillation term
    L_Dis: the squared distance of the student's final (projection-head) embedding to the
    teacher's of the same view, both L2-normalised,

        L_Dis = Σ_i ‖s̄_i − t̄_i‖₂²   (``"sum"``)   or   (1/N) Σ_i ‖s̄_i − t̄_i‖₂²   (``"mean"``).

    The student's own contrastive loss (MoCo-v2) is added by the method, weight 1.

    Follows DisCo/moco/builder_kq_mse_largeembedding_2048.py (the builder DisCo/main.py L216
    uses) ``MoCo.forward`` L182–207: the query encoder's embeddings of both views (q, qk) and
    the frozen teacher's of the same views (teacher_q, teacher_qk), all normalised; and
    DisCo/main.py L263 and L434–442: ``nn.MSELoss(reduction='sum')`` per view, the two views
    added to the contrastive loss with weight 1 each. ``"sum"`` (the default) is the code's:
    a sum over the process's batch and dimensions, so stacking the two views' rows
    ([view 1; view 2]) gives its mse_loss + mse_loss_qk in one call; its weight against the
    batch-mean contrastive loss grows with the per-process batch (32 in the authors' 8-GPU
    runs of 256). ``"mean"`` averages over the rows instead.
    """
    s, t = unit(student), unit(teacher).detach()
    distance = ((s - t) ** 2).sum(1)
    return distance.sum() if reduction == "sum" else distance.mean()


def simreg_loss(prediction: Tensor, teacher: Tensor) -> Tensor:
    """SimReg (Navaneet, Abbasi Koohpayegani, Tejankar & Pirsiavash, BMVC 2021), §3: the
    student's prediction-head output regresses the teacher's feature, as the squared
    distance of the unit vectors,

        L = (1/N) Σ_i ‖p̄_i − t̄_i‖₂² = (1/N) Σ_i (2 − 2·cos(p_i, t_i)),

    (the same quantity as BYOL's ``normalized_l2``). ``prediction``: N×D, the student's MLP
    output in the teacher's dimension; ``teacher``: N×D, the teacher's feature (backbone or
    head, whichever is distilled).

    Follows simreg.py ``SimReg.forward`` (L96–131: the prediction normalised, L100, the target
    normalised, L116, then 2 − 2·⟨q, t⟩, L129, mean over the batch, L130). Its
    ``--mse_nonorm`` branch (L123–126) sums squared differences of the same normalised
    vectors, so it is this loss too.
    """
    return normalized_l2(prediction, teacher)


def bingo_loss(
    student_anchor: Tensor, student_neighbour: Tensor, teacher_anchor: Tensor, queue: Tensor, tau: float = 0.2,
    backend: Backend = "auto",
) -> Tensor:
    """BINGO (Xu, Fang, Zhang, Xie, Wang, Dai, Xiong & Tian, ICLR 2022), §3, the intra- and
    inter-sample distillation terms, summed:

        L_intra = −log exp(S(x_a)·T(x_a′)/τ) / (exp(S(x_a)·T(x_a′)/τ) + Σ_k exp(S(x_a)·d_k/τ))
        L_inter = −log exp(S(x_p)·T(x_a′)/τ) / (exp(S(x_p)·T(x_a′)/τ) + Σ_k exp(S(x_p)·d_k/τ))
        L = L_intra + L_inter

    the student's embedding of one view of the anchor (``student_anchor``) and of a member
    x_p of the anchor's bag (``student_neighbour``, one per anchor) both contrasted against the
    teacher's embedding of the anchor's other view (``teacher_anchor``), negatives the queue
    d_1 … d_K of past teacher anchor embeddings: MoCo's InfoNCE (``queue_info_nce``) twice,
    each a mean over the N anchors. τ = 0.2 (main_moco.py L54, ``--moco_t``;
    scripts/unsupervised/SR18-TR50.sh).

    This is the paper's objective. The authors' code trains a larger mixture — both teacher
    embeddings as positives of each student embedding, a CutMix term, the mean of three —
    which ``bingo_bag_loss`` reproduces.
    """
    target, negatives = teacher_anchor.detach(), queue.detach()
    return queue_info_nce(student_anchor, target, negatives, tau, backend) + queue_info_nce(
        student_neighbour, target, negatives, tau, backend
    )


def bingo_bag_loss(
    student_anchor: Tensor, student_neighbour: Tensor, student_mixed: Tensor, teacher_anchor: Tensor,
    teacher_neighbour: Tensor, queue: Tensor, mixed_fraction: float, tau: float = 0.2,
    weights: tuple[float, float] = (0.5, 0.5), backend: Backend = "auto",
) -> Tensor:
    """BINGO (Xu et al., ICLR 2022) as the authors' code trains it. Per anchor: the student's
    embeddings of a view of the anchor (s_a), of a view of one bag member (s_p) and of their
    CutMix (s_m); the teacher's of the other view of each (t_a, t_p). With NCE(s, t) MoCo's
    InfoNCE of positive t against the queue (mean over the N anchors) and (w_own, w_cross) =
    ``weights``,

        L = ( w_own·NCE(s_a, t_a) + w_cross·NCE(s_a, t_p)
            + w_cross·NCE(s_p, t_a) + w_own·NCE(s_p, t_p)
            + λ·NCE(s_m, t_a) + (1 − λ)·NCE(s_m, t_p) ) / 3,

    λ = ``mixed_fraction``, the share of the anchor's pixels left in the mixed image.

    Follows moco/builder.py ``MoCo.forward`` and ``logits_q_nk`` (L142–206: every student
    embedding gets both teacher embeddings as positives, the same queue of negatives, logits
    over τ; only t_a is enqueued, L195) and main_moco.py L355–387 with ``MulposCrossEntropy``
    (L106–126): the λ-weighted cross-entropies, the three queries' losses summed and divided by
    3. ``weights`` is ``--lam`` (main_moco.py L94, 0.5, 0.5) after epoch 10; the code uses
    (1, 0) for the first 10 epochs (L374–378). λ is utils.py ``cutmix`` (L38–47: 1 − the
    pasted box's area, one value per batch). The bag member is drawn at random from the
    anchor's teacher nearest neighbours, both its views augmented independently
    (moco/folder.py L187–192, L213–225). τ = 0.2 (main_moco.py L54).
    """
    own, cross = weights
    teacher_anchor, teacher_neighbour, negatives = teacher_anchor.detach(), teacher_neighbour.detach(), queue.detach()

    def nce(student: Tensor, teacher: Tensor) -> Tensor:
        return queue_info_nce(student, teacher, negatives, tau, backend)

    anchor = own * nce(student_anchor, teacher_anchor) + cross * nce(student_anchor, teacher_neighbour)
    neighbour = cross * nce(student_neighbour, teacher_anchor) + own * nce(student_neighbour, teacher_neighbour)
    mixed = mixed_fraction * nce(student_mixed, teacher_anchor) + (1 - mixed_fraction) * nce(
        student_mixed, teacher_neighbour
    )
    return (anchor + neighbour + mixed) / 3
