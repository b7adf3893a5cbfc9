"""Step equivalence against Mini-SSL's code (issue 14, part 2): MSF, ReSSL, SNCLR and SCE.

Each test trains a method for three optimiser steps twice from the same initial weights on
the same pre-made views: once as Mini-SSL's code does it, transcribed below, and once
through fastssl's own ``train_step`` with the recipe's ``MethodConfig`` (tiny sizes) and
fastssl's optimiser builder. It then checks that the losses, the student and teacher
weights, the memory and the BN running statistics agree, in float64 on the CPU.

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

Known differences and how each is handled here:

* Split-BN layout. Mini-SSL's ``SplitBatchNorm`` views N×C×H×W as (N/k)×(k·C)×H×W, so its
  k groups interleave the batch (image n in group n mod k); fastssl's groups are contiguous
  blocks. fastssl gets each view's images permuted (``CONTIGUOUS``) so that its groups hold
  the same images as Mini-SSL's; the teacher's shuffle fastssl drew is read off the images
  its teacher received and handed to the reference as the permutation that puts the same
  images in each of its groups (Mini-SSL draws it with ``torch.randperm``). Memory rows are
  compared through the same permutation.
* Per-view calls. Mini-SSL runs the student and the teacher once per direction, one view at
  a time; fastssl once over both views. The backbone's split-BN groups never straddle the
  views, so the forward passes agree, but (a) the BN layers of the MSF and SNCLR heads pool
  both views in fastssl: the main tests run those head BN layers in eval mode on both sides
  and the training-mode heads are a separate xfail test (a genuine departure, issue 14's MSF
  row); (b) in the symmetric methods (MSF, SNCLR, SCE) Mini-SSL updates every BN running
  statistic twice per step (once per view) where fastssl updates it once with both views'
  mean: the main tests leave the running statistics out for those three and a separate
  xfail test shows the difference. ReSSL (one direction) is compared in full.
* SCE's positive slot. Mini-SSL's SCE.py puts a teacher similarity of 0 in the positive's slot
  of the relational target; fastssl masks it (Eq. 5). The main test takes a teacher
  temperature (τ_m 0.002) at which that slot's mass is below 1e-13 in Mini-SSL's target, and
  checks it. At Mini-SSL's --tem 0.05 the slot holds at most 1.6e-5 of the mass here (loss
  difference 1e-5, inside the tolerance), so the xfail test shows it at τ_m 1 (about 1/17).
* MSF's heads. Mini-SSL's ``BYOLProjectionHead``/``BYOLPredictionHead`` (lightly's
  ``ProjectionHead``) have no bias in the linear layer before their BN; fastssl's have one,
  which training-mode BN cancels (zero gradient). With the head BN in eval mode it would
  not cancel, so it is zeroed and frozen here on fastssl's side.
* lr warm-up. Mini-SSL's ``cosine_scheduler`` warms up along ``np.linspace(0, peak, W)``
  (peak·i/(W−1)), fastssl along peak·i/W; the steps here run without warm-up (cosine from
  the first step) and the warm-up is a separate xfail test.
* EMA momentum. fastssl's ``EMATeacher`` holds m in a float32 buffer (0.99 → 0.99000000954,
  1 − m off by 9.5e-7 of itself); the reference is given that value, and the rounding is a
  separate xfail test.
* Precision. fastssl's losses and its memory push upcast with ``.float()`` (meant for bf16),
  which in float64 rounds their inputs to float32; the tolerance (``RTOL``) is set above that
  floor and below what every wrong setting tried produced.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from fastssl.eval.online import OnlineProbe
from fastssl.methods.base import Method, Progress
from fastssl.models.backbone import backbone_from_config
from fastssl.models.norm import split_bn_group_size
from fastssl.models.resnet import ResNet
from fastssl.recipes import get
from fastssl.train.build import Parts
from fastssl.train.optim import build_optimizer
from fastssl.train.schedule import warmup_cosine
from fastssl.train.step import Meter, learning_rate, train_step
from pipelines.batch import ViewBatch

N = 8  # images per step (Mini-SSL's --batch_size)
SPLITS = 2  # split-BN groups per view (Mini-SSL's bn_splits, fastssl's --model.bn-splits)
GROUP = N // SPLITS  # images per group
WIDTH, SIZE, MEMORY, STEPS, CLASSES = 4, 16, 16, 3, 4
FEATURES = WIDTH * 8  # resnet18's pooled features (Mini-SSL's 512 at width 64)
HEAD_HIDDEN, HEAD_DIM = 16, 8  # the heads' hidden and output widths (Mini-SSL: 2048 and 128, SCE 256)
LR_PER_256 = 1.92  # lr 0.06 at batch 8 by the linear scaling rule of both (Mini-SSL's base lr at 256)
# fastssl's losses and memory run in float32 even on float64 inputs (``unit``, ``.float()``),
# so the two agree to about 1e-6 of a tensor's norm here (BN biases, which start at 0, are the
# worst), not to float64's 1e-15; every wrong setting tried (EMA momentum 0.98, the memory
# searched after the enqueue, no shuffle, a constant lr, no weight decay on BN and biases)
# moves a loss or a weight by 1.7e-5 of it or more.
RTOL, ATOL = 4e-6, 1e-12
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


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    """util/utils.py ``cosine_scheduler``: one lr per iteration."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def mini_ssl_training(model, steps, labels, arrange, epochs=STEPS, weight_decay=5e-4):
    """main_pretrain.py ``main`` and ``train`` (one iteration per epoch here): SGD over
    ``model.parameters()`` with weight decay on every parameter, the lr set per iteration
    from ``cosine_scheduler`` (base lr × batch/256; no warm-up here), model(im1, im2),
    zero_grad, backward, step. ``arrange`` runs after ``model.train()`` (the test's head-BN
    arrangement); ``steps`` yields (im1, im2), strong then weak (data_two.py)."""
    base_lr, batch_size = LR_PER_256, N
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9, weight_decay=weight_decay)
    lr_schedule = cosine_scheduler(base_value=base_lr * batch_size / 256.0, final_value=0.0, epochs=epochs,
                                   niter_per_ep=1, start_warmup_value=0.0, warmup_epochs=0)
    losses = []
    for it, (im1, im2) in enumerate(steps):
        model.train()
        arrange(model)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr_schedule[it]
        loss = model(im1, im2, labels=labels)
        loss = loss[0] if isinstance(loss, tuple) else loss  # nnclr/msf/snclr also return the purity
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)


# --- the two runs -------------------------------------------------------------------------------


@dataclass
class Runs:
    fastssl: Method
    reference: MiniSSLMethod
    fastssl_losses: Tensor
    reference_losses: Tensor
    heads: tuple[str, ...]  # the student's heads, by fastssl's name
    notes: dict = field(default_factory=dict)


REFERENCE_CLASSES = {"msf": MiniMSF, "ressl": MiniReSSL, "snclr": MiniSNCLR, "sce": MiniSCE}
# main_pretrain_evaluation.sh (4a82212), the CIFAR-10 runs cifar10_4 (ReSSL), _6 (MSF),
# _7 (SNCLR), _8 (SCE); --queue_size and the head widths take the test's sizes.
MINI_SSL_SCRIPT = {
    "msf": {"momentum": 0.99, "topk": 5, "symmetric": True},
    "ressl": {"momentum": 0.99, "tem": 0.04, "symmetric": False},
    "snclr": {"momentum": 0.99, "topk": 5, "tem": 0.2, "symmetric": True},
    "sce": {"momentum": 0.99, "tem": 0.05, "symmetric": True},
}
REFERENCE_NAMES = {"teacher_temperature": "tem"}  # fastssl's name of a setting → Mini-SSL's


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


def fastssl_heads(method: Method) -> list[nn.Module]:
    student = method.student
    heads = [student.projector, *([student.predictor] if student.predictor is not None else [])]
    return [*heads, method.teacher.network.projector]


def head_batch_norms_to_eval(heads) -> None:
    for head in heads:
        for m in head.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.eval()


@functools.cache
def runs(name: str, head_bn: str = "eval", **method_changes) -> Runs:
    """Three steps of recipe ``name`` in fastssl and in Mini-SSL's code from the same
    weights and views. ``head_bn``: "eval" runs the heads' BN layers (MSF, SNCLR) from their
    running statistics on both sides, "train" in training mode as both codes do."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tiny float64 convolutions run 5–7× slower on two threads
    try:
        return _runs(name, head_bn, **method_changes)
    finally:
        torch.set_num_threads(threads)


def _runs(name: str, head_bn: str, **method_changes) -> Runs:
    torch.manual_seed(0)
    recipe = get(name)
    cfg = recipe.preset(
        data=Path("unused"),
        method={"memory_size": MEMORY, "proj_hidden": HEAD_HIDDEN, "proj_dim": HEAD_DIM, **method_changes}
        | ({"pred_hidden": HEAD_HIDDEN} if name in ("msf", "snclr") else {}),
        model={"width": WIDTH, "bn_splits": SPLITS},
        optim={"batch_size": N, "epochs": STEPS, "warmup_epochs": 0, "lr_per_256": LR_PER_256},
        run={"channels_last": False},
    )
    mc, oc = cfg.method, cfg.optim
    assert (oc.optimizer, oc.momentum, oc.weight_decay, oc.schedule) == ("sgd", 0.9, 5e-4, "cosine")
    strong, second = cfg.view_groups()["global"]
    if name == "snclr":  # two strong views (no --weak)
        assert strong == second
    else:  # data_two.py with --weak: the strong view first, get_weak_augment's second
        crop_and_flip = (second.crop_scale, second.flip_p, second.jitter_p, second.grayscale_p, second.blur_p)
        assert crop_and_flip == ((0.2, 1.0), 0.9, 0.0, 0.0, 0.0) and strong.jitter_p == 0.8
    backbone = backbone_from_config(cfg.model, SIZE, split_bn_group_size(cfg.model.bn_splits, N, 1))
    method = recipe.method(mc, backbone).double()
    if name == "msf":  # Mini-SSL's BYOL heads have no bias before their BN (see the module docstring)
        for head in fastssl_heads(method):
            head[0].bias.requires_grad_(False).zero_()
    if head_bn == "eval":
        head_batch_norms_to_eval(fastssl_heads(method))

    # Mini-SSL's model with its script's settings and fastssl's initial weights; the test's
    # arrangements (a teacher temperature) apply to both.
    script = {**MINI_SSL_SCRIPT[name], **{REFERENCE_NAMES.get(k, k): v for k, v in method_changes.items()}}
    # The momentum as fastssl holds it, a float32 buffer (0.99 → 0.99000000954; see
    # test_teacher_momentum_is_the_recipes): the exact 0.99 would move the teacher's
    # parameters that start at 0 (BN biases) by 1e-6 of themselves.
    script["momentum"] = float(torch.tensor(script["momentum"], dtype=torch.float32))
    shuffles = Shuffles()
    net = mini_resnet18().double()
    copy_weights(net, method.student.backbone)
    reference = REFERENCE_CLASSES[name](net, K=MEMORY, shuffles=shuffles, start=method.memory.features.clone(),
                                        dim=HEAD_DIM, hidden=HEAD_HIDDEN, **script).double()
    copy_weights(reference.projection_head, method.student.projector)
    if hasattr(reference, "prediction_head"):
        copy_weights(reference.prediction_head, method.student.predictor)
    reference.backbone_momentum = copy.deepcopy(reference.net).requires_grad_(False)  # as its constructor
    reference.projection_head_momentum = copy.deepcopy(reference.projection_head).requires_grad_(False)

    # The views: random pre-made images, the first view of each image strong, the second weak.
    g = torch.Generator().manual_seed(1)
    steps = [(torch.randn(N, 3, SIZE, SIZE, generator=g, dtype=torch.float64),
              torch.randn(N, 3, SIZE, SIZE, generator=g, dtype=torch.float64)) for _ in range(STEPS)]
    labels = torch.arange(N) % CLASSES

    # fastssl: its own step, optimiser and schedule; the teacher's inputs recorded.
    probe = OnlineProbe(backbone.feature_dim, CLASSES)
    parts = Parts(cfg=cfg, recipe=name, accelerator=Accelerator(cpu=True, mixed_precision="no"), info=None,
                  loader=[None], method=method, optimizer=build_optimizer(method.param_groups(oc), oc), probe=probe,
                  probe_call=probe, probe_optimizer=torch.optim.SGD(probe.parameters(), lr=0.1, momentum=0.9),
                  compile_mode=None)
    teacher_inputs: list[Tensor] = []
    hook = method.teacher.network.register_forward_pre_hook(lambda _, args: teacher_inputs.append(args[0].clone()))
    fast_losses = []
    for step, (strong, weak) in enumerate(steps):
        images = torch.cat([strong[CONTIGUOUS], weak[CONTIGUOUS]])
        batch = ViewBatch({"global": images}, torch.arange(N), labels[CONTIGUOUS], {})
        fast_losses.append(train_step(parts, batch, Progress(step, 0, 1, STEPS), Meter()).loss.detach())
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

    def arrange(model):
        if head_bn == "eval":
            head_batch_norms_to_eval([getattr(model, h) for h in ("projection_head", "prediction_head",
                                                                   "projection_head_momentum") if hasattr(model, h)])

    def steps_with_shuffles():
        for views, images in zip(per_step, steps, strict=True):
            shuffles.views = views
            yield images

    ref_losses = mini_ssl_training(reference, steps_with_shuffles(), labels, arrange)
    heads = ("projector", "predictor") if name in ("msf", "snclr") else ("projector",)
    return Runs(method, reference, torch.stack(fast_losses), ref_losses, heads,
                {"positive_mass": getattr(reference, "positive_mass", None)})


# --- the comparisons ------------------------------------------------------------------------------


def close(actual: Tensor, expected: Tensor, what: str) -> None:
    """‖actual − expected‖ ≤ RTOL·‖expected‖ + ATOL (a tensor's norm: its elements near 0
    would make an elementwise relative test one of float32's rounding, not of the step)."""
    a, b = actual.detach().double(), expected.detach().double()
    assert a.shape == b.shape, f"{what}: shapes {a.shape} and {b.shape}"
    error, size = float((a - b).norm()), float(b.norm())
    CLOSENESS.append((error / (size + 1e-30), what))
    assert error <= RTOL * size + ATOL, f"{what}: differs by {error:.3e} (relative {error / size:.3e})"


CLOSENESS: list[tuple[float, str]] = []  # every comparison's relative difference (for a look)


def assert_layers_match(reference: nn.Module, fastssl: nn.Module, what: str, running_stats: bool) -> None:
    """Every parameter (and, with ``running_stats``, every BN running mean and variance)."""
    for i, (ref, fast) in enumerate(layer_pairs(reference, fastssl)):
        for name, value in fast.named_parameters(recurse=False):
            if getattr(ref, name, None) is None:  # fastssl's bias before MSF's head BN: zero, frozen
                assert not value.requires_grad and not value.any(), f"{what} layer {i}.{name}"
                continue
            close(value, getattr(ref, name), f"{what} layer {i} ({type(fast).__name__}).{name}")
        if running_stats and isinstance(fast, _BatchNorm) and fast.track_running_stats:
            for name in ("running_mean", "running_var"):
                close(getattr(fast, name), getattr(ref, name), f"{what} layer {i} ({type(fast).__name__}).{name}")


def assert_weights_match(r: Runs, running_stats: bool) -> None:
    student, teacher, ref = r.fastssl.student, r.fastssl.teacher.network, r.reference
    assert_layers_match(ref.net, student.backbone, "student backbone", running_stats)
    assert_layers_match(ref.projection_head, student.projector, "student projector", running_stats)
    if "predictor" in r.heads:
        assert_layers_match(ref.prediction_head, student.predictor, "student predictor", running_stats)
    assert_layers_match(ref.backbone_momentum, teacher.backbone, "teacher backbone", running_stats)
    assert_layers_match(ref.projection_head_momentum, teacher.projector, "teacher projector", running_stats)


def assert_memories_match(r: Runs) -> None:
    """fastssl's memory row j of a step's block is Mini-SSL's row CONTIGUOUS[j] of it; every
    block has been written by the last step (3 steps of 8 into 16 rows: the pointer wraps)."""
    fast, bank = r.fastssl.memory, r.reference.memory_bank
    ours = fast.features.view(-1, N, fast.features.shape[1])
    theirs = F.normalize(bank.bank.T, dim=1).view(-1, N, fast.features.shape[1])[:, CONTIGUOUS]
    close(ours, theirs, "memory")
    assert int(fast.pointer) == int(bank.bank_ptr) == (STEPS * N) % MEMORY


def assert_steps_match(r: Runs, running_stats: bool) -> None:
    close(r.fastssl_losses, r.reference_losses, "losses")
    assert_weights_match(r, running_stats)
    assert_memories_match(r)


# --- the tests --------------------------------------------------------------------------------------


def test_msf_step_matches_reference():
    """MSF: the EMA before the forward pass (predictor excluded), the strong view through the
    online network and the weak through the shuffled target, the symmetric loss, the top-5
    of the memory as it was before the step, the weak view's targets enqueued, SGD with
    weight decay on every parameter and the per-step cosine lr. Head BN in eval mode, and
    no running statistics (see the xfail tests below)."""
    assert_steps_match(runs("msf"), running_stats=False)


def test_ressl_step_matches_reference():
    """ReSSL (one direction): the strong view through the student only, the weak through the
    shuffled teacher only, the relational loss against the memory before the step, the weak
    keys enqueued; with the BN running statistics of both networks (one call each per step
    in both codes)."""
    assert_steps_match(runs("ressl"), running_stats=True)


def test_snclr_step_matches_reference():
    """SNCLR (both views strong, as Mini-SSL's script): its no-bias BN heads, the soft-
    neighbour loss with the cross-attention weights, symmetric, the second view's targets
    enqueued. Head BN in eval mode, no running statistics (see below)."""
    assert_steps_match(runs("snclr"), running_stats=False)


def test_sce_step_matches_reference():
    """SCE: ReSSL's orchestration, symmetric, with the λ-mixed target, at a teacher
    temperature where the positive's teacher slot carries no mass in Mini-SSL's target
    either (so fastssl's masking of it agrees); no running statistics (see below)."""
    assert get("sce").config().teacher_temperature == MINI_SSL_SCRIPT["sce"]["tem"]  # the recipe's is --tem's
    r = runs("sce", teacher_temperature=0.002)
    assert r.notes["positive_mass"] < 1e-13
    assert_steps_match(r, running_stats=False)


DEPARTS = "fastssl departs from Mini-SSL: {}, see issue 14"


@pytest.mark.xfail(strict=True, reason=DEPARTS.format(
    "MSF's online and target head BN pools the strong and the weak view in one batch (Mini-SSL: one per view)"))
def test_msf_head_bn_per_view_matches_reference():
    assert_steps_match(runs("msf", head_bn="train"), running_stats=False)


@pytest.mark.xfail(strict=True, reason=DEPARTS.format(
    "SNCLR's head BN pools both views in one batch (Mini-SSL: one per view)"))
def test_snclr_head_bn_per_view_matches_reference():
    assert_steps_match(runs("snclr", head_bn="train"), running_stats=False)


@pytest.mark.xfail(strict=True, reason=DEPARTS.format(
    "one BN running-statistics update per step over both views (Mini-SSL: two, one per view)"))
@pytest.mark.parametrize("name", ["msf", "snclr", "sce"])
def test_symmetric_bn_running_stats_match_reference(name):
    r = runs(name, teacher_temperature=0.002) if name == "sce" else runs(name)
    assert_weights_match(r, running_stats=True)


@pytest.mark.xfail(strict=True, reason=DEPARTS.format(
    "SCE's relational target masks the positive's teacher slot (Mini-SSL: similarity 0 there)"))
def test_sce_positive_teacher_slot_matches_reference():
    """At Mini-SSL's --tem 0.05 the slot holds at most 1.6e-5 of the relational mass here (a
    loss difference of 1e-5, within this file's tolerance); at τ_m 1 it holds about 1/17."""
    r = runs("sce", teacher_temperature=1.0)
    assert r.notes["positive_mass"] > 0.01
    close(r.fastssl_losses, r.reference_losses, "losses")


@pytest.mark.xfail(strict=True, reason=DEPARTS.format("warm-up lr peak·i/W (Mini-SSL: np.linspace, peak·i/(W−1))"))
def test_lr_warmup_matches_reference_cosine_scheduler():
    recipe = get("msf")
    cfg = recipe.preset(data=Path("unused"), optim={"batch_size": N, "epochs": 4, "warmup_epochs": 1,
                                                    "lr_per_256": LR_PER_256})
    steps_per_epoch = 5
    parts = Parts(cfg=cfg, recipe="msf", accelerator=None, info=None, loader=[None] * steps_per_epoch, method=None,
                  optimizer=None, probe=None, probe_call=None, probe_optimizer=None, compile_mode=None)
    ours = [learning_rate(parts, Progress(e, s, steps_per_epoch, 4)) for e in range(4) for s in range(steps_per_epoch)]
    theirs = cosine_scheduler(LR_PER_256 * N / 256, 0.0, 4, steps_per_epoch, warmup_epochs=1)
    assert warmup_cosine(0, 20, 5, 1.0) == 0.0  # both start from 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)


@pytest.mark.xfail(strict=True, reason=DEPARTS.format(
    "the EMA momentum is a float32 buffer, 0.99 → 0.99000000954, so 1 − m is 9.5e-7 of itself off"))
def test_teacher_momentum_is_the_recipes():
    r = runs("msf")
    assert float(r.fastssl.teacher.momentum) == r.fastssl.cfg.momentum
