"""Step equivalence against Mini-SSL's code (issue 14, part 2): MSF, ReSSL, SNCLR and SCE.

Each test trains a method for six optimiser steps — two epochs of three, the first a
warm-up epoch, the whole schedule — twice from the same initial weights on the same
pre-made views: once as Mini-SSL's code does it, transcribed below, and once through
fastssl's own ``train_step`` with the recipe's ``MethodConfig`` (tiny sizes), its optimiser
builder and its schedule, its networks called once per view (``Method.call_per_view``, as
the training builder sets them unless ``--model.joint-views``), as Mini-SSL calls them. It
then checks, in float64 on the CPU, to 1e-9 of each tensor's norm (``RTOL``): the lr of
every step (warm-up along ``np.linspace(0, peak, W)``, then the cosine), the losses, every
parameter of the student and of the teacher, the memory, and every BN running mean and
variance of both (the backbones' split-BN and the heads' BN, which runs in training mode
on both sides, over one view per call). The EMA momentum is the recipe's exactly (a float64
buffer; ``test_teacher_momentum_is_the_recipes``). ``num_batches_tracked`` is not
compared: Mini-SSL's split-BN calls ``F.batch_norm`` and never counts, and with the BN
momentum set nothing reads it.

The reference is pc-cp/Benchmark-Methods-For-MNN at 80dd398 (its newest commit; read with
the read_file tool and a mirror of the repository): ``network/MSF.py``, ``network/SNCLR.py``
and ``network/SCE.py`` as last changed by the fix 4a82212 (both directions search the memory
as it was before the step), ``network/ReSSL.py`` as of bed9e87, ``network/heads.py``,
``network/base_model.py``, ``util/utils.py`` (93e06b7/02eb60a), ``util/MemoryBankModule.py``
and ``util/NNMemoryBankModule.py`` (02eb60a), ``main_pretrain.py`` (41d6c60) and
``dataset/data_two.py`` (7d20f3a: with ``--weak`` the first view is the strong one, the
second the weak one), with Mini-SSL's script settings (``main_pretrain_evaluation.sh``). The
transcription drops the ``.cuda()`` calls; it keeps the neighbours' purity, a monitor that
no loss uses.

What is arranged, and why:

* Split-BN layout. Mini-SSL's ``SplitBatchNorm`` views N×C×H×W as (N/k)×(k·C)×H×W, so its
  k groups interleave the batch (image n in group n mod k); fastssl's groups are contiguous
  blocks. fastssl gets each view's images permuted (``CONTIGUOUS``) so that its groups hold
  the same images as Mini-SSL's; the teacher's shuffle fastssl drew is read off the images
  its teacher received and handed to the reference as the permutation that puts the same
  images in each of its groups (Mini-SSL draws it with ``torch.randperm``). Memory rows are
  compared through the same permutation, normalised (Mini-SSL stores raw keys and
  normalises them when it reads them; fastssl stores unit ones), and Mini-SSL's memory
  starts from fastssl's initial one (it draws its own on the first call).
* The order of the student's BN updates (MSF, SNCLR, SCE). Mini-SSL's symmetric ``forward``
  computes ``loss_21`` first: its student runs on view 2, then on view 1 (``loss_12``), its
  teacher on view 1, then on view 2. fastssl calls both on [view 1; view 2], view 1 first.
  Each call moves a BN layer's running statistics, r ← (1 − m)·r + m·s, so the same two
  updates in the other order leave other buffers (by m²·(s₂ − s₁) a step: 6e-5 to 0.2 of
  their norm here). No swap of the views is an exact equivalence: swapped for the
  reference, its teacher would run out of order and it would enqueue the strong view's
  keys. So the teacher's buffers (the same order in both) are compared with Mini-SSL's as
  they are, and the student's with Mini-SSL's own batch statistics of every call
  (``BatchStatistics``, each call tagged with its view) applied in fastssl's order: every
  statistic agrees, only the order of two updates differs. The direct comparison is the
  strict xfail ``test_symmetric_student_bn_running_stats_match_reference``. ReSSL calls
  each network once a step: all its buffers are compared with Mini-SSL's as they are.
* MSF's heads. Mini-SSL's ``BYOLProjectionHead``/``BYOLPredictionHead`` (lightly's
  ``ProjectionHead``) have no bias in the linear layer before their BN; fastssl's keep one
  (a kept choice). Training-mode BN cancels it (its gradient is 0, and 0 decays to 0), but
  it enters that BN's running mean, so it starts at 0 on fastssl's side here (student and
  teacher) and is checked to stay 0. Left at its initial value, only the running means of
  those three BN layers differ (by 0.16 to 1.4 of their norm); everything else agrees.

Nothing else is arranged: SCE's positive slot gets a teacher similarity of 0 in both
(SCE.py's ``sim_k_ktarget``, fastssl's default ``positive_relation``), at Mini-SSL's
--tem 0.05; the ``"masked"`` option (Eq. 5) departs from it there, beyond the tolerance
(``test_sce_masked_positive_departs_from_reference``).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from fastssl.methods.base import Method, Progress
from fastssl.models.backbone import backbone_from_config
from fastssl.models.norm import split_bn_group_size
from fastssl.models.resnet import ResNet
from fastssl.recipes import get
from fastssl.train.build import Parts
from fastssl.train.step import learning_rate
from pipelines.batch import ViewBatch
from tests.methods.common import Stepper, cosine_scheduler

N = 8  # images per step (Mini-SSL's --batch_size)
SPLITS = 2  # split-BN groups per view (Mini-SSL's bn_splits, fastssl's --model.bn-splits)
GROUP = N // SPLITS  # images per group
WIDTH, SIZE, MEMORY, CLASSES = 4, 16, 16, 4
FEATURES = WIDTH * 8  # resnet18's pooled features (Mini-SSL's 512 at width 64)
HEAD_HIDDEN, HEAD_DIM = 16, 8  # the heads' hidden and output widths (Mini-SSL: 2048 and 128, SCE 256)
LR_PER_256 = 1.92  # lr 0.06 at batch 8 by the linear scaling rule of both (Mini-SSL's base lr at 256)
# The schedule, per step: a warm-up epoch (lr 0, peak/2, peak: np.linspace) and a cosine
# epoch (peak, 3/4, 1/4 of it); both run it whole.
EPOCHS, STEPS_PER_EPOCH, WARMUP_EPOCHS = 2, 3, 1
STEPS = EPOCHS * STEPS_PER_EPOCH
# fastssl's losses and memory keep float64 (``at_least_fp32``): the two agree to 6e-11 of a
# tensor's norm here (SNCLR's BN biases, which start at 0, are the worst; 1e-13 for ReSSL and
# SCE). Every wrong setting tried moves some compared tensor by 1e-6 of it or more: the EMA
# momentum rounded to float32 (0.99000000954) a teacher BN bias by 1e-6 (the losses by 6e-9
# to 1.3e-6); SCE's masked positive slot a BN bias by 2.5e-5 (the losses by 1.6e-6); momentum
# 0.98, the warm-up peak·i/W, a constant lr, the memory searched after the enqueue or no
# shuffle by 0.9 or more (the losses by 1.5e-2 or more); both views in one call MSF's and
# SNCLR's losses by 4e-2, SCE's running statistics by 0.35 (ReSSL calls each network once).
RTOL, ATOL = 1e-9, 1e-12
# fastssl's image j of a view is Mini-SSL's image CONTIGUOUS[j]: its contiguous split-BN
# groups then hold the images of Mini-SSL's interleaved ones (group s: images n ≡ s mod k).
CONTIGUOUS = torch.arange(N).view(GROUP, SPLITS).T.flatten()


def interleaved(order: Tensor) -> Tensor:
    """Mini-SSL's shuffle of one view that puts in its interleaved group s the images that
    fastssl's shuffle ``order`` (positions → fastssl's images) puts in its contiguous group s."""
    return CONTIGUOUS[order].view(SPLITS, GROUP).T.flatten()


# --- Mini-SSL, transcribed (pc-cp/Benchmark-Methods-For-MNN@80dd398) -------------------------


class MiniSplitBatchNorm(nn.BatchNorm2d):
    """network/base_model.py ``SplitBatchNorm``."""

    def __init__(self, num_features, num_splits, **kw):
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def forward(self, input):
        N, C, H, W = input.shape
        if self.training or not self.track_running_stats:
            running_mean_split = self.running_mean.repeat(self.num_splits)
            running_var_split = self.running_var.repeat(self.num_splits)
            outcome = F.batch_norm(
                input.view(-1, C * self.num_splits, H, W), running_mean_split, running_var_split,
                self.weight.repeat(self.num_splits), self.bias.repeat(self.num_splits),
                True, self.momentum, self.eps).view(N, C, H, W)
            self.running_mean.data.copy_(running_mean_split.view(self.num_splits, C).mean(dim=0))
            self.running_var.data.copy_(running_var_split.view(self.num_splits, C).mean(dim=0))
            return outcome
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias, False,
                            self.momentum, self.eps)


def mini_resnet18(bn_splits: int = SPLITS) -> nn.Sequential:
    """network/base_model.py ``ModelBase_ResNet18``: resnet18 with split-BN, conv1 3×3 at
    stride 1, the max-pool dropped, fc replaced by a flatten. Its network/resnet.py is
    torchvision's ResNet with its width fixed at 64; the trunk is built here at width 4 by
    fastssl's ``ResNet`` class (torchvision's BasicBlock, the same layers in the same order)
    with Mini-SSL's norm layer; the weights are then copied from fastssl's."""
    norm_layer = partial(MiniSplitBatchNorm, num_splits=bn_splits) if bn_splits > 1 else nn.BatchNorm2d
    net = ResNet("resnet18", cifar_stem=True, maxpool=False, width=WIDTH, norm=norm_layer)
    layers = [module for name, module in net.named_children() if name != "maxpool"]
    return nn.Sequential(*layers, nn.Flatten(1))


class ProjectionHead(nn.Module):
    """network/heads.py ``ProjectionHead`` (lightly's): blocks of (in, out, batch_norm, non_linearity)."""

    def __init__(self, blocks):
        super().__init__()
        layers = []
        for input_dim, output_dim, batch_norm, non_linearity in blocks:
            use_bias = not bool(batch_norm)
            layers.append(nn.Linear(input_dim, output_dim, bias=use_bias))
            if batch_norm:
                layers.append(batch_norm)
            if non_linearity:
                layers.append(non_linearity)
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def byol_head(input_dim, hidden_dim, output_dim):
    """network/heads.py ``BYOLProjectionHead`` and ``BYOLPredictionHead`` (the same blocks)."""
    return ProjectionHead([(input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                           (hidden_dim, output_dim, None, None)])


def moco_projection_head(input_dim, hidden_dim, output_dim):
    """network/heads.py ``MoCoProjectionHead`` with its defaults num_layers 2, batch_norm False."""
    return ProjectionHead([(input_dim, hidden_dim, None, nn.ReLU()), (hidden_dim, output_dim, None, None)])


def snclr_mlp(num_layers, input_dim, hidden_dim, output_dim, last_bn=True):
    """network/SNCLR.py ``SNCLR._build_mlp``."""
    mlp = []
    for l in range(num_layers):  # noqa: E741 (Mini-SSL's name)
        dim1 = input_dim if l == 0 else hidden_dim
        dim2 = output_dim if l == num_layers - 1 else hidden_dim
        mlp.append(nn.Linear(dim1, dim2, bias=False))
        if l < num_layers - 1:
            mlp.append(nn.BatchNorm1d(dim2))
            mlp.append(nn.ReLU(inplace=True))
        elif last_bn:
            mlp.append(nn.BatchNorm1d(dim2, affine=False))
    return nn.Sequential(*mlp)


def generation_mask(topk, batch):
    """util/utils.py ``generation_mask``: row b is 1 on the topk columns of image b."""
    mask_ = torch.eye(batch)
    return mask_.repeat(topk, 1).reshape(topk, batch, -1).permute(2, 1, 0).reshape(batch, topk * batch)


def update_momentum(model, model_ema, m):
    """util/utils.py ``update_momentum``, parameters by position."""
    for ema, online in zip(model_ema.parameters(), model.parameters(), strict=True):
        ema.data = ema.data * m + online.data * (1.0 - m)


class Shuffles:
    """util/utils.py ``batch_shuffle``/``batch_unshuffle`` (one process). Mini-SSL draws the
    shuffle with ``torch.randperm``; here each view gets the permutation that fastssl's draw
    amounts to (see ``interleaved``), looked up by the view's images."""

    def __init__(self) -> None:
        self.views: list[tuple[Tensor, Tensor]] = []

    @torch.no_grad()
    def batch_shuffle(self, batch):
        shuffle = next(perm for images, perm in self.views if torch.equal(images, batch))
        return batch[shuffle], shuffle

    @staticmethod
    @torch.no_grad()
    def batch_unshuffle(batch, shuffle):
        unshuffle = torch.argsort(shuffle)
        return batch[unshuffle]


class MemoryBankModule(nn.Module):
    """util/MemoryBankModule.py: a dim×size bank, returned as it was before this call's
    enqueue. Mini-SSL draws it on the first call (randn, normalised); here it starts from
    fastssl's initial memory (``start``)."""

    def __init__(self, size, start: Tensor):
        super().__init__()
        self.size = size
        self.register_buffer("bank", start.T.clone())
        self.register_buffer("bank_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("labels", -1 * torch.ones(self.size).long())

    @torch.no_grad()
    def _dequeue_and_enqueue(self, batch, labels):
        batch_size = batch.shape[0]
        ptr = int(self.bank_ptr)
        if ptr + batch_size >= self.size:
            self.labels[ptr:] = labels[: self.size - ptr]
            self.bank[:, ptr:] = batch[: self.size - ptr].T.detach()
            self.bank_ptr[0] = 0
        else:
            self.labels[ptr : ptr + batch_size] = labels
            self.bank[:, ptr : ptr + batch_size] = batch.T.detach()
            self.bank_ptr[0] = ptr + batch_size

    def forward(self, output, labels=None, update=False):
        bank = self.bank.clone().detach()
        bank_labels = self.labels.clone().detach()
        if update:
            self._dequeue_and_enqueue(output, labels=labels)
        return output, bank, bank_labels


class NNMemoryBankModule(MemoryBankModule):
    """util/NNMemoryBankModule.py: the top-k neighbours of ``querys`` in the bank (before the
    enqueue of ``keys``), and [query, its neighbours] per image."""

    def __init__(self, size, topk, start: Tensor):
        super().__init__(size, start)
        self.topk = topk

    def forward(self, querys, keys, update=False, labels=None):
        keys, bank, bank_labels = super().forward(output=keys, labels=labels, update=update)
        bank = bank.t()
        query_normed = F.normalize(querys, dim=1)
        bank_normed = F.normalize(bank, dim=1)
        similarity_matrix = torch.einsum("nd,md->nm", query_normed, bank_normed)
        _, index_nearest_neighbours = similarity_matrix.topk(self.topk, dim=1, largest=True)
        batch_size, feature_dim = querys.shape
        current_batch_labels = labels.unsqueeze(1).expand(batch_size, self.topk)
        labels_queue = bank_labels.clone().detach().unsqueeze(0).expand((batch_size, self.size))
        labels_queue = torch.gather(labels_queue, dim=1, index=index_nearest_neighbours)
        purity = ((labels_queue == current_batch_labels).float().sum(dim=1) / self.topk).mean()
        nearest_neighbours = torch.index_select(bank, dim=0, index=index_nearest_neighbours.reshape(-1))
        add_output_to_nearest_neighbours = torch.cat(
            (querys.unsqueeze(dim=1), nearest_neighbours.reshape(batch_size, self.topk, feature_dim)), dim=1
        ).reshape(-1, feature_dim)
        return nearest_neighbours, purity, bank, add_output_to_nearest_neighbours


class MiniSSLMethod(nn.Module):
    """What network/MSF.py, ReSSL.py, SNCLR.py and SCE.py share: ``net``, a momentum copy of it
    and of the projection head (``copy.deepcopy``, no gradient), a memory bank."""

    def __init__(self, net, projection_head, momentum, symmetric, shuffles, prediction_head=None):
        super().__init__()
        self.momentum, self.symmetric, self.shuffles = momentum, symmetric, shuffles
        self.net = net
        self.backbone_momentum = copy.deepcopy(self.net)
        self.projection_head = projection_head
        if prediction_head is not None:
            self.prediction_head = prediction_head
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        self.backbone_momentum.requires_grad_(False)  # deactivate_requires_grad
        self.projection_head_momentum.requires_grad_(False)

    def keys(self, im_k):
        with torch.no_grad():
            im_k_, shuffle = self.shuffles.batch_shuffle(im_k)
            z_k = self.projection_head_momentum(self.backbone_momentum(im_k_))
            return self.shuffles.batch_unshuffle(z_k, shuffle)

    def update_momentum(self):
        update_momentum(model=self.net, model_ema=self.backbone_momentum, m=self.momentum)
        update_momentum(model=self.projection_head, model_ema=self.projection_head_momentum, m=self.momentum)


class MiniMSF(MiniSSLMethod):
    """network/MSF.py (4a82212)."""

    def __init__(self, net, K, momentum, topk, symmetric, shuffles, start, dim, hidden):
        super().__init__(net, byol_head(FEATURES, hidden, dim), momentum, symmetric, shuffles,
                         prediction_head=byol_head(dim, hidden, dim))
        self.K, self.topk = K, topk
        self.memory_bank = NNMemoryBankModule(size=self.K, topk=self.topk, start=start)

    def generation_mask_with_pos(self, batch_size):
        nn_labels = generation_mask(batch=batch_size, topk=self.topk)
        one_label = torch.eye(batch_size)
        return torch.cat((one_label.reshape(batch_size, -1, batch_size).unsqueeze(dim=-1),
                          nn_labels.reshape(batch_size, -1, batch_size, self.topk)), dim=-1).reshape(batch_size, -1)

    def contrastive_loss(self, im_q, im_k, labels, update=False):
        z_q = self.projection_head(self.net(im_q))
        p_q = self.prediction_head(z_q)
        z_k = self.keys(im_k).clone().detach()
        batch_size, _ = z_q.shape
        _, purity, _, z_k_keep_nn = self.memory_bank(querys=z_k, keys=z_k, update=update, labels=labels)
        p_q = F.normalize(p_q, dim=1)
        z_k_keep_nn = F.normalize(z_k_keep_nn, dim=1)
        dist_qk_keep_nn = 2 - 2 * torch.einsum("bc,kc->bk", [p_q, z_k_keep_nn])
        pseudo_labels = self.generation_mask_with_pos(batch_size).to(dist_qk_keep_nn)
        loss = (torch.mul(dist_qk_keep_nn, pseudo_labels).sum(dim=1) / (1 + self.topk)).mean()
        return loss, purity

    def forward(self, im1, im2, labels):
        self.update_momentum()
        if self.symmetric:
            loss_21, purity_21 = self.contrastive_loss(im2, im1, update=False, labels=labels)
        loss_12, purity_12 = self.contrastive_loss(im1, im2, update=True, labels=labels)
        loss, purity = loss_12, purity_12
        if self.symmetric:
            purity = (purity_12 + purity_21) * 1.0 / 2
            loss = (loss_12 + loss_21) * 1.0 / 2
        return loss, purity


class MiniReSSL(MiniSSLMethod):
    """network/ReSSL.py (bed9e87). (With --symmetric its second direction would see the bank
    after the first's enqueue; Mini-SSL's ReSSL script and fastssl's recipe run one direction.)"""

    def __init__(self, net, K, momentum, tem, symmetric, shuffles, start, dim, hidden):
        super().__init__(net, moco_projection_head(FEATURES, hidden, dim), momentum, symmetric, shuffles)
        self.K, self.tem = K, tem
        self.memory_bank = MemoryBankModule(size=self.K, start=start)

    def contrastive_loss(self, im_q, im_k, labels, update=False):
        z_q = self.projection_head(self.net(im_q))
        z_k = self.keys(im_k)
        _, bank, _ = self.memory_bank(output=z_k, labels=labels, update=update)
        q = F.normalize(z_q, dim=1)
        k = F.normalize(z_k, dim=1)
        bank = F.normalize(bank.t(), dim=1)
        logits_q = torch.einsum("nc,mc->nm", q, bank)
        logits_k = torch.einsum("nc,mc->nm", k, bank)
        return -torch.sum(F.softmax(logits_k.detach() / self.tem, dim=1) * F.log_softmax(logits_q / 0.1, dim=1),
                          dim=1).mean()

    def forward(self, im1, im2, labels):
        self.update_momentum()
        loss_12 = self.contrastive_loss(im1, im2, update=True, labels=labels)
        loss = loss_12
        if self.symmetric:
            loss_21 = self.contrastive_loss(im2, im1, update=False, labels=labels)
            loss = (loss_12 + loss_21) * 1.0 / 2
        return loss


class MiniSNCLR(MiniSSLMethod):
    """network/SNCLR.py (4a82212), threshold off (Mini-SSL's script)."""

    def __init__(self, net, K, momentum, topk, tem, symmetric, shuffles, start, dim, hidden):
        super().__init__(net, snclr_mlp(3, FEATURES, hidden, dim), momentum, symmetric, shuffles,
                         prediction_head=snclr_mlp(2, dim, hidden, dim))
        self.K, self.topk, self.tem, self.threshold = K, topk, tem, False
        self.memory_bank = NNMemoryBankModule(size=self.K, topk=self.topk, start=start)

    def _generation_mask(self, batch_size):
        mask_ = torch.eye(batch_size)
        mask_ = (mask_ - 1) * 999
        return mask_.repeat(self.topk, 1).reshape(self.topk, batch_size, -1).permute(2, 1, 0).reshape(
            batch_size, self.topk * batch_size)

    def generation_mask_with_pos(self, querys, nearest_neighbors, batch_size):
        querys = F.normalize(querys, dim=1)
        nearest_neighbors = F.normalize(nearest_neighbors, dim=1)
        cross_attn = torch.einsum("nc,mc->nm", querys, nearest_neighbors)
        att_mask = self._generation_mask(batch_size=batch_size).to(cross_attn)
        cross_attn = F.softmax(cross_attn + att_mask, dim=1)
        one_hot = torch.eye(batch_size).to(cross_attn)
        return torch.cat((one_hot.reshape(batch_size, -1, batch_size).unsqueeze(dim=-1),
                          cross_attn.reshape(batch_size, -1, batch_size, self.topk)), dim=-1).reshape(batch_size, -1)

    def contrastive_loss(self, im_q, im_k, labels, update=False):
        z_q = self.projection_head(self.net(im_q))
        p_q = self.prediction_head(z_q)
        z_k = self.keys(im_k)
        batch_size, _ = z_q.shape
        z_k_nn, purity, _, z_k_keep_nn = self.memory_bank(querys=z_k, keys=z_k, update=update, labels=labels)
        p_q = F.normalize(p_q, dim=1)
        z_k_keep_nn = F.normalize(z_k_keep_nn, dim=1)
        logits = torch.einsum("nc,mc->nm", p_q, z_k_keep_nn) / self.tem
        cross_attn_scores = self.generation_mask_with_pos(querys=z_q, nearest_neighbors=z_k_nn, batch_size=batch_size)
        loss = -torch.sum(cross_attn_scores * F.log_softmax(logits, dim=1), dim=1).mean()
        return loss, purity

    forward = MiniMSF.forward  # the same in SNCLR.py (4a82212): loss_21 first, then loss_12 with the enqueue


class MiniSCE(MiniSSLMethod):
    """network/SCE.py (4a82212)."""

    def __init__(self, net, K, momentum, tem, symmetric, shuffles, start, dim, hidden):
        super().__init__(net, moco_projection_head(FEATURES, hidden, dim), momentum, symmetric, shuffles)
        self.K, self.tem, self.coeff = K, tem, 0.5
        self.memory_bank = MemoryBankModule(size=self.K, start=start)
        self.positive_mass = 0.0  # the test's record: the largest mass of the positive's teacher slot

    def contrastive_loss(self, im_q, im_k, true_labels, update=False):
        z_q = self.projection_head(self.net(im_q))
        z_k = self.keys(im_k)
        _, bank, _ = self.memory_bank(output=z_k, labels=true_labels, update=update)
        z_q = F.normalize(z_q, dim=1)
        z_k = F.normalize(z_k, dim=1)
        bank = F.normalize(bank.t(), dim=1)
        batch_size = z_q.shape[0]
        one_hot_labels = torch.zeros(batch_size, dtype=torch.long)
        one_hot_labels = F.one_hot(one_hot_labels, 1 + bank.shape[0])
        sim_k_ktarget = torch.zeros(batch_size).unsqueeze(-1).to(z_k)
        sim_k_queue = torch.einsum("nc,mc->nm", z_k, bank)
        sim_k = torch.cat([sim_k_ktarget, sim_k_queue], dim=1)
        logits_k = sim_k / self.tem
        prob_k = F.softmax(logits_k, dim=1)
        self.positive_mass = max(self.positive_mass, float(prob_k[:, 0].max()))
        w = F.normalize(self.coeff * one_hot_labels + (1 - self.coeff) * prob_k, p=1, dim=1)
        sim_q_ktarget = torch.einsum("nc,nc->n", [z_q, z_k]).unsqueeze(-1)
        sim_q_queue = torch.einsum("nc,mc->nm", z_q, bank)
        sim_q = torch.cat([sim_q_ktarget, sim_q_queue], dim=1)
        logits_q = sim_q / 0.1
        return -torch.sum(w * F.log_softmax(logits_q, dim=1), dim=1).mean(dim=0)

    def forward(self, im1, im2, labels):
        self.update_momentum()
        if self.symmetric:
            loss_21 = self.contrastive_loss(im2, im1, update=False, true_labels=labels)
        loss_12 = self.contrastive_loss(im1, im2, update=True, true_labels=labels)
        loss = loss_12
        if self.symmetric:
            loss = (loss_12 + loss_21) * 1.0 / 2
        return loss




def mini_ssl_training(model, steps, labels):
    """main_pretrain.py ``main`` and ``train``: SGD over ``model.parameters()`` with weight
    decay on every parameter, the lr set per iteration from ``cosine_scheduler`` (base lr ×
    batch/256, from --begin_lr 0 over --warmup_lr_epochs, to --final_lr 0), ``model.train()``
    per epoch, then per iteration model(im1, im2), zero_grad, backward, step. ``steps``
    yields (im1, im2), strong then weak (data_two.py). Returns the losses and the lrs."""
    base_lr, batch_size = LR_PER_256, N
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9, weight_decay=5e-4)
    lr_schedule = cosine_scheduler(base_value=base_lr * batch_size / 256.0, final_value=0.0, epochs=EPOCHS,
                                   niter_per_ep=STEPS_PER_EPOCH, start_warmup_value=0.0, warmup_epochs=WARMUP_EPOCHS)
    losses = []
    for epoch in range(EPOCHS):
        model.train()
        for i in range(STEPS_PER_EPOCH):
            it = STEPS_PER_EPOCH * epoch + i
            im1, im2 = next(steps)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr_schedule[it]
            loss = model(im1, im2, labels=labels)
            loss = loss[0] if isinstance(loss, tuple) else loss  # nnclr/msf/snclr also return the purity
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
    return torch.stack(losses), torch.from_numpy(lr_schedule)


# --- test instrumentation on the reference ------------------------------------------------------


class BatchStatistics:
    """Not Mini-SSL's: the batch mean and unbiased variance of every training-mode call of
    the BN layers in ``modules`` (what the call moves the layer's running statistics
    towards), each tagged (step, view) by the view ``backbone`` received (the heads run on
    its output, the same view)."""

    def __init__(self, backbone: nn.Module, modules: list[nn.Module]) -> None:
        self.step, self.views, self.tag = -1, (), (-1, -1)
        self.start: dict[nn.Module, tuple[Tensor, Tensor]] = {}
        self.calls: dict[nn.Module, list[tuple[tuple[int, int], Tensor, Tensor]]] = {}
        backbone.register_forward_pre_hook(self._tag)
        for bn in (m for module in modules for m in module.modules()):
            if isinstance(bn, _BatchNorm) and bn.track_running_stats:
                self.start[bn] = (bn.running_mean.clone(), bn.running_var.clone())
                self.calls[bn] = []
                bn.register_forward_pre_hook(self._record)

    def next_step(self, views: tuple[Tensor, Tensor]) -> None:
        self.step, self.views = self.step + 1, views

    def _tag(self, _, args) -> None:
        self.tag = (self.step, next(v for v, images in enumerate(self.views) if torch.equal(images, args[0])))

    def _record(self, bn, args) -> None:
        if not bn.training:
            return
        x = args[0].detach()
        if isinstance(bn, MiniSplitBatchNorm):  # x as N/k × k·C: group j holds images j, j + k, …
            groups = x.view(-1, bn.num_splits, *x.shape[1:])
            mean, var = groups.mean((0, 3, 4)).mean(0), groups.var((0, 3, 4)).mean(0)
        else:
            mean, var = x.mean(0), x.var(0)
        self.calls[bn].append((self.tag, mean, var))

    def replayed(self, bn: nn.Module) -> tuple[Tensor, Tensor]:
        """``bn``'s running mean and variance after its recorded updates in fastssl's order
        (step by step, view 1 then view 2; a stable sort of the calls by their tags)."""
        mean, var = (t.clone() for t in self.start[bn])
        for _, batch_mean, batch_var in sorted(self.calls[bn], key=lambda call: call[0]):
            mean.lerp_(batch_mean, bn.momentum)
            var.lerp_(batch_var, bn.momentum)
        return mean, var


# --- the two runs -------------------------------------------------------------------------------


@dataclass
class Runs:
    fastssl: Method
    reference: MiniSSLMethod
    fastssl_losses: Tensor
    reference_losses: Tensor
    fastssl_lrs: Tensor
    reference_lrs: Tensor
    student_statistics: BatchStatistics  # of the reference's student


REFERENCE_CLASSES = {"msf": MiniMSF, "ressl": MiniReSSL, "snclr": MiniSNCLR, "sce": MiniSCE}
# main_pretrain_evaluation.sh (4a82212), the CIFAR-10 runs cifar10_4 (ReSSL), _6 (MSF),
# _7 (SNCLR), _8 (SCE); --queue_size and the head widths take the test's sizes.
MINI_SSL_SCRIPT = {
    "msf": {"momentum": 0.99, "topk": 5, "symmetric": True},
    "ressl": {"momentum": 0.99, "tem": 0.04, "symmetric": False},
    "snclr": {"momentum": 0.99, "topk": 5, "tem": 0.2, "symmetric": True},
    "sce": {"momentum": 0.99, "tem": 0.05, "symmetric": True},
}


def leaves(module: nn.Module) -> list[nn.Module]:
    """The layers that hold parameters or buffers, in order."""
    return [m for m in module.modules()
            if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))]


def layer_pairs(reference: nn.Module, fastssl: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    pairs = list(zip(leaves(reference), leaves(fastssl), strict=True))
    for ref, fast in pairs:
        assert isinstance(ref, _BatchNorm) == isinstance(fast, _BatchNorm) and type(ref.weight) is type(fast.weight)
    return pairs


@torch.no_grad()
def copy_weights(reference: nn.Module, fastssl: nn.Module) -> None:
    """fastssl's weights and BN statistics into the reference, layer by layer."""
    for ref, fast in layer_pairs(reference, fastssl):
        for name, tensor in [*ref.named_parameters(recurse=False), *ref.named_buffers(recurse=False)]:
            tensor.copy_(getattr(fast, name))


def student_modules(model: MiniSSLMethod) -> list[nn.Module]:
    return [model.net, model.projection_head, *([model.prediction_head] if hasattr(model, "prediction_head") else [])]


@functools.cache
def runs(name: str, **fastssl_changes) -> Runs:
    """The steps of recipe ``name`` in fastssl and in Mini-SSL's code from the same weights
    and views. ``fastssl_changes``: settings of fastssl's method alone (Mini-SSL's keep its
    script's)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tiny float64 convolutions run 5–7× slower on two threads
    try:
        return _runs(name, **fastssl_changes)
    finally:
        torch.set_num_threads(threads)


def _runs(name: str, **fastssl_changes) -> Runs:
    torch.manual_seed(0)
    recipe = get(name)
    cfg = recipe.preset(
        data=Path("unused"),
        method={"memory_size": MEMORY, "proj_hidden": HEAD_HIDDEN, "proj_dim": HEAD_DIM, **fastssl_changes}
        | ({"pred_hidden": HEAD_HIDDEN} if name in ("msf", "snclr") else {}),
        model={"width": WIDTH, "bn_splits": SPLITS},
        optim={"batch_size": N, "epochs": EPOCHS, "warmup_epochs": WARMUP_EPOCHS, "lr_per_256": LR_PER_256},
        run={"channels_last": False},
    )
    mc, oc = cfg.method, cfg.optim
    assert (oc.optimizer, oc.momentum, oc.weight_decay, oc.schedule, oc.warmup_start_lr) == (
        "sgd", 0.9, 5e-4, "cosine", 0.0)
    assert not cfg.model.joint_views  # the per-view calls, as the training builder makes them
    strong, second = cfg.view_groups()["global"]
    if name == "snclr":  # two strong views (no --weak)
        assert strong == second
    else:  # data_two.py with --weak: the strong view first, get_weak_augment's second
        crop_and_flip = (second.crop_scale, second.flip_p, second.jitter_p, second.grayscale_p, second.blur_p)
        assert crop_and_flip == ((0.2, 1.0), 0.9, 0.0, 0.0, 0.0) and strong.jitter_p == 0.8
    backbone = backbone_from_config(cfg.model, SIZE, split_bn_group_size(cfg.model.bn_splits, N, 1))
    method = recipe.method(mc, backbone).double()
    method.call_per_view(N)  # what fastssl.train.build does for a run without --model.joint-views
    if name == "msf":  # the bias before the heads' BN, which Mini-SSL's heads lack (module docstring)
        student = method.student
        for head in (student.projector, student.predictor, method.teacher.network.projector):
            head[0].bias.detach().zero_()

    # Mini-SSL's model with its script's settings and fastssl's initial weights.
    shuffles = Shuffles()
    net = mini_resnet18().double()
    copy_weights(net, method.student.backbone)
    reference = REFERENCE_CLASSES[name](net, K=MEMORY, shuffles=shuffles, start=method.memory.features.clone(),
                                        dim=HEAD_DIM, hidden=HEAD_HIDDEN, **MINI_SSL_SCRIPT[name]).double()
    copy_weights(reference.projection_head, method.student.projector)
    if hasattr(reference, "prediction_head"):
        copy_weights(reference.prediction_head, method.student.predictor)
    reference.backbone_momentum = copy.deepcopy(reference.net).requires_grad_(False)  # as its constructor
    reference.projection_head_momentum = copy.deepcopy(reference.projection_head).requires_grad_(False)
    statistics = BatchStatistics(reference.net, student_modules(reference))

    # The views: random pre-made images, the first view of each image strong, the second weak.
    g = torch.Generator().manual_seed(1)
    steps = [(torch.randn(N, 3, SIZE, SIZE, generator=g, dtype=torch.float64),
              torch.randn(N, 3, SIZE, SIZE, generator=g, dtype=torch.float64)) for _ in range(STEPS)]
    labels = torch.arange(N) % CLASSES

    # fastssl: its own step, optimiser and schedule; the teacher's inputs recorded.
    stepper = Stepper(name, method, cfg, STEPS_PER_EPOCH, CLASSES)
    teacher_inputs: list[Tensor] = []
    hook = method.teacher.network.register_forward_pre_hook(lambda _, args: teacher_inputs.append(args[0].clone()))
    fast_losses, fast_lrs = [], []
    for step, (strong, weak) in enumerate(steps):
        images = torch.cat([strong[CONTIGUOUS], weak[CONTIGUOUS]])
        batch = ViewBatch({"global": images}, torch.arange(N), labels[CONTIGUOUS], {})
        fast_losses.append(stepper(batch, step))
        fast_lrs.append(learning_rate(stepper.parts, stepper.progress(step)))
    hook.remove()

    # The shuffles fastssl drew, as Mini-SSL's permutations of each view.
    per_step: list[list[tuple[Tensor, Tensor]]] = []
    for (strong, weak), received in zip(steps, teacher_inputs, strict=True):
        images = torch.cat([strong[CONTIGUOUS], weak[CONTIGUOUS]])
        position = (received[:, None] == images[None]).flatten(2).all(-1).int().argmax(1)
        views = []
        for block in position.view(-1, N):
            view = int(block[0]) // N
            assert bool((block // N == view).all())  # fastssl shuffles within each view
            views.append(((strong, weak)[view], interleaved(block - view * N)))
        per_step.append(views)

    def steps_with_shuffles():
        for views, images in zip(per_step, steps, strict=True):
            shuffles.views = views
            statistics.next_step(images)
            yield images

    ref_losses, ref_lrs = mini_ssl_training(reference, steps_with_shuffles(), labels)
    return Runs(method, reference, torch.stack(fast_losses), ref_losses, torch.tensor(fast_lrs, dtype=torch.float64),
                ref_lrs, statistics)


# --- the comparisons ------------------------------------------------------------------------------


def close(actual: Tensor, expected: Tensor, what: str) -> None:
    """‖actual − expected‖ ≤ RTOL·‖expected‖ + ATOL (a tensor's norm: its elements near 0
    would make an elementwise relative test one of rounding, not of the step)."""
    a, b = actual.detach().double(), expected.detach().double()
    assert a.shape == b.shape, f"{what}: shapes {a.shape} and {b.shape}"
    error, size = float((a - b).norm()), float(b.norm())
    CLOSENESS.append((error / (size + 1e-30), what))
    assert error <= RTOL * size + ATOL, f"{what}: differs by {error:.3e} (relative {error / size:.3e})"


CLOSENESS: list[tuple[float, str]] = []  # every comparison's relative difference (for a look)


def mini_ssl_buffers(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """A reference BN layer's own running mean and variance."""
    return bn.running_mean, bn.running_var


def assert_layers_match(reference: nn.Module, fastssl: nn.Module, what: str, running_stats=mini_ssl_buffers) -> None:
    """Every parameter, and every BN running mean and variance against ``running_stats`` of
    the reference's layer (its own buffers, or ``BatchStatistics.replayed``)."""
    for i, (ref, fast) in enumerate(layer_pairs(reference, fastssl)):
        for name, value in fast.named_parameters(recurse=False):
            if getattr(ref, name, None) is None:  # fastssl's bias before MSF's head BN: zeroed, and stays 0
                close(value, torch.zeros_like(value), f"{what} layer {i}.{name}")
                continue
            close(value, getattr(ref, name), f"{what} layer {i} ({type(fast).__name__}).{name}")
        if isinstance(fast, _BatchNorm) and fast.track_running_stats:
            for name, expected in zip(("running_mean", "running_var"), running_stats(ref), strict=True):
                close(getattr(fast, name), expected, f"{what} layer {i} ({type(fast).__name__}).{name}")


def assert_student_matches(r: Runs, running_stats=mini_ssl_buffers) -> None:
    student = r.fastssl.student
    ours = {"backbone": student.backbone, "projector": student.projector, "predictor": student.predictor}
    ours = {part: module for part, module in ours.items() if module is not None}
    for (part, module), theirs in zip(ours.items(), student_modules(r.reference), strict=True):
        assert_layers_match(theirs, module, f"student {part}", running_stats)


def assert_memories_match(r: Runs) -> None:
    """fastssl's memory row j of a step's block is Mini-SSL's row CONTIGUOUS[j] of it; every
    block has been written (6 steps of 8 into 16 rows: the pointer wraps)."""
    fast, bank = r.fastssl.memory, r.reference.memory_bank
    ours = fast.features.view(-1, N, fast.features.shape[1])
    theirs = F.normalize(bank.bank.T, dim=1).view(-1, N, fast.features.shape[1])[:, CONTIGUOUS]
    close(ours, theirs, "memory")
    assert int(fast.pointer) == int(bank.bank_ptr) == (STEPS * N) % MEMORY


def assert_steps_match(r: Runs) -> None:
    """The lrs, the losses, every weight of the student and the teacher, the memory; the
    teacher's BN running statistics as Mini-SSL's buffers, the student's as Mini-SSL's
    buffers for ReSSL and, for the symmetric methods, replayed in fastssl's order."""
    close(r.fastssl_lrs, r.reference_lrs, "lrs")
    close(r.fastssl_losses, r.reference_losses, "losses")
    assert_student_matches(r, r.student_statistics.replayed if r.reference.symmetric else mini_ssl_buffers)
    teacher, ref = r.fastssl.teacher.network, r.reference
    assert_layers_match(ref.backbone_momentum, teacher.backbone, "teacher backbone")
    assert_layers_match(ref.projection_head_momentum, teacher.projector, "teacher projector")
    assert_memories_match(r)


# --- the tests --------------------------------------------------------------------------------------


def test_msf_step_matches_reference():
    """MSF: the EMA before the forward pass (predictor excluded), the strong view through the
    online network and the weak through the shuffled target, the heads' BN per view, the
    symmetric loss, the top-5 of the memory as it was before the step, the weak view's
    targets enqueued, SGD with weight decay on every parameter, the warm-up and the cosine."""
    assert_steps_match(runs("msf"))


def test_ressl_step_matches_reference():
    """ReSSL (one direction): the strong view through the student only, the weak through the
    shuffled teacher only, the relational loss against the memory before the step, the weak
    keys enqueued; every BN running statistic as Mini-SSL's (one call of each network per
    step in both)."""
    assert_steps_match(runs("ressl"))


def test_snclr_step_matches_reference():
    """SNCLR (both views strong, as Mini-SSL's script): its no-bias BN heads per view, the
    soft-neighbour loss with the cross-attention weights, symmetric, the second view's
    targets enqueued."""
    assert_steps_match(runs("snclr"))


def test_sce_step_matches_reference():
    """SCE: ReSSL's orchestration, symmetric, with the λ-mixed target at Mini-SSL's --tem
    0.05, the positive's teacher similarity 0 as in SCE.py (fastssl's default)."""
    defaults = get("sce").config()
    assert (defaults.teacher_temperature, defaults.positive_relation) == (MINI_SSL_SCRIPT["sce"]["tem"], "zero")
    assert_steps_match(runs("sce"))


def test_sce_masked_positive_departs_from_reference():
    """``--method.positive-relation masked`` (Eq. 5's 1_{i≠k}; tests/losses/test_relational.py
    checks it against the equation) gives the positive no relational mass, where Mini-SSL's
    similarity 0 leaves it e^0/Z: at --tem 0.05 up to 1.6e-5 of it here, which moves the
    losses by 1.6e-6 of their norm, 1600× the tolerance: the main test tells the two apart
    at Mini-SSL's own τ_m."""
    r = runs("sce", positive_relation="masked")
    assert r.reference.positive_mass > 1e-6
    error = float((r.fastssl_losses - r.reference_losses).norm() / r.reference_losses.norm())
    assert error > 100 * RTOL


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "fastssl departs from Mini-SSL: its student runs view 1, then view 2; Mini-SSL's runs view 2 first (loss_21), "
    "so the same two BN running-statistics updates a step come in the other order, see issue 14"))
@pytest.mark.parametrize("name", ["msf", "snclr", "sce"])
def test_symmetric_student_bn_running_stats_match_reference(name):
    """The student's BN buffers against Mini-SSL's as they are (the main tests replay Mini-SSL's
    batch statistics in fastssl's order; the parameters, checked first, agree)."""
    assert_student_matches(runs(name))


def test_lr_warmup_matches_reference_cosine_scheduler():
    """The whole schedule of a longer run: the warm-up along np.linspace(0, peak, W)
    (peak·i/(W − 1)), then the cosine, per step."""
    cfg = get("msf").preset(data=Path("unused"), optim={"batch_size": N, "epochs": 4, "warmup_epochs": 1,
                                                        "lr_per_256": LR_PER_256})
    steps_per_epoch = 5
    parts = Parts(cfg=cfg, recipe="msf", accelerator=None, info=None, loader=[None] * steps_per_epoch, method=None,
                  optimizer=None, probe=None, probe_call=None, probe_optimizer=None, compile_mode=None)
    ours = [learning_rate(parts, Progress(e, s, steps_per_epoch, 4)) for e in range(4) for s in range(steps_per_epoch)]
    theirs = cosine_scheduler(LR_PER_256 * N / 256, 0.0, 4, steps_per_epoch, warmup_epochs=1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", sorted(MINI_SSL_SCRIPT))
def test_teacher_momentum_is_the_recipes(name):
    """The EMA momentum exactly as the recipe's and Mini-SSL's script's (a float64 buffer)."""
    momentum = runs(name).fastssl.teacher.momentum
    assert momentum.dtype == torch.float64
    assert float(momentum) == runs(name).fastssl.cfg.momentum == MINI_SSL_SCRIPT[name]["momentum"]
