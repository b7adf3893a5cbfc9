"""Step equivalence against Mini-SSL (issue 14, part 2): MoCo v2, SimCLR, BYOL and NNCLR.

Each test takes three optimiser steps of the reference, transcribed below (written from
reading it, not copied) from pc-cp/Benchmark-Methods-For-MNN at 80dd398, its newest commit,
where the files were last changed in: network/MoCo.py and network/NNCLR.py 4a82212 (the
queue-order fix), network/SimCLR.py 8b84260, network/BYOL.py 20b871d,
util/NNMemoryBankModule.py 02eb60a, and network/heads.py, network/base_model.py,
network/resnet.py, util/MemoryBankModule.py, util/utils.py, main_pretrain.py 93e06b7. It
takes three steps of fastssl's method with the recipe's optimiser settings through
fastssl's own ``train_step`` and ``build_optimizer``, from the same weights and on the same
views, in float64 on the CPU, and compares the losses, the student's and the teacher's
weights, the queue and the BN running statistics.

fastssl's method calls its networks once per view (``Method.call_per_view``, the default
of a training run), as Mini-SSL does, so every BN layer, the heads' included, normalises
over one view in training mode in both. What still differs, and how each is handled:

* Split-BN groups: Mini-SSL's ``SplitBatchNorm`` views a batch as N/k × C·k, so its group j
  holds images j, j + k, …; fastssl's groups are contiguous. Mini-SSL is given fastssl's
  views reordered by ``INTERLEAVE``, so its group j holds the images of fastssl's group j;
  outputs, losses and the queue are compared in that correspondence.
* The order of the running-statistics updates: both move a BN layer's running statistics
  once per call, but Mini-SSL calls its networks in the order its loss directions need
  (MoCo's student: view 2, then view 1; SimCLR and NNCLR: each view twice, once per
  direction, the two calls of a view giving identical statistics), fastssl once per view in
  view order. Sequential updates in another order give other buffers, so each reference BN
  layer records the batch statistics of every call with the view it was of
  (``ViewTagger``), and ``RunningStatsReplay`` applies them to the starting buffers as
  fastssl should: one update per view, view 1 then view 2 — checking that fastssl's buffers
  hold exactly the statistics Mini-SSL's layers saw. ``num_batches_tracked`` is left out:
  Mini-SSL's split-BN never counts (it calls ``F.batch_norm``), fastssl's does; with a set
  BN momentum neither reads it.
* A bias fastssl keeps before a head's BN where Mini-SSL has none (BYOL's projector and
  predictor, NNCLR's predictor) starts at 0: training-mode BN cancels it (its gradient is
  0, so it stays 0 under weight decay); left nonzero, it would enter that BN's running mean
  only (the strict xfail test at the end), which no evaluation reads — a kept choice.

Also arranged: Mini-SSL stores raw keys in its queue and normalises them when it reads
them, fastssl stores unit keys (compared normalised); the queue starts from fastssl's
initial one; the target's shuffles are the ones fastssl drew, mapped into Mini-SSL's
interleaved groups (``reference_shuffles``). The schedule has a warm-up epoch (lr 0, then
the peak, as ``np.linspace``) and then the cosine, per step, in both.
"""

from __future__ import annotations

import copy
import dataclasses
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from fastssl import recipes
from fastssl.methods.base import Progress
from fastssl.methods.byol import BYOLConfig
from fastssl.methods.memory import FeatureQueue
from fastssl.models.resnet import build_backbone
from fastssl.train.step import learning_rate
from pipelines.batch import ViewBatch
from tests.methods.common import Stepper, cosine_scheduler, train_config

N = 8  # images per view
SPLITS = 2  # Mini-SSL's bn_splits (ModelBase_ResNet18's argument; 8 in its runs)
GROUP = N // SPLITS  # images per split-BN group
WIDTH, HIDDEN, DIM, QUEUE = 4, 16, 8, 16  # ResNet-18 width; head widths; queue of 2 batches
EPOCHS, STEPS_PER_EPOCH, STEPS = 3, 2, 4  # 2 warm-up steps then a 4-step cosine, 4 steps taken
WARMUP_EPOCHS = 1
LR_PER_256 = 1.92  # Mini-SSL's --base_lr, scaled by batch/256: lr 0.06 at batch 8
RTOL, ATOL = 1e-9, 1e-12
# Mini-SSL's position p of a view holds fastssl's image INTERLEAVE[p]: its split p mod k is
# then fastssl's contiguous group p mod k.
INTERLEAVE = torch.tensor([(p % SPLITS) * GROUP + p // SPLITS for p in range(N)])


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread (these tiny ops are several times faster without the thread
    pool); a fixed seed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------
# Mini-SSL (pc-cp/Benchmark-Methods-For-MNN), transcribed. Sizes are shrunk (width, head
# widths, queue, bn_splits); ``calls`` (the recorded statistics, tagged by ``ViewTagger``)
# and ``draw`` (where batch_shuffle's permutation comes from) are test instrumentation, not
# Mini-SSL.


class ViewTagger:
    """Which of a step's two views a reference network is running on: a forward pre-hook
    on each backbone compares its input with the views as multisets of images (a shuffled
    batch sums to the same), and the BN layers read ``view`` when they record a call (the
    heads run right after the backbone, on the same view)."""

    view: int | None = None
    step_views: tuple = ()

    @classmethod
    def attach(cls, *backbones):
        for backbone in backbones:
            backbone.register_forward_pre_hook(cls._tag)

    @classmethod
    def _tag(cls, _module, args):
        totals = [v.sum(0) for v in cls.step_views]
        cls.view = next(i for i, total in enumerate(totals) if torch.allclose(args[0].sum(0), total))


class RefSplitBatchNorm(nn.BatchNorm2d):
    """network/base_model.py ``SplitBatchNorm`` (93e06b7): in training, BN of the batch
    viewed as N/k × C·k (split j: images j, j + k, …) with the running statistics repeated
    per split, updated by ``F.batch_norm`` and averaged back."""

    def __init__(self, num_features, num_splits):
        super().__init__(num_features)
        self.num_splits = num_splits
        self.calls = []

    def forward(self, x):
        n, c, h, w = x.shape
        k = self.num_splits
        if self.training or not self.track_running_stats:
            splits = x.detach().view(-1, k, c, h, w)  # [n/k, split, C, H, W], as view(-1, C·k, H, W)
            # The mean of the groups' means and of their unbiased variances: what one call moves the buffers by.
            self.calls.append((ViewTagger.view, splits.mean((0, 3, 4)).mean(0), splits.var((0, 3, 4)).mean(0)))
            running_mean = self.running_mean.repeat(k)
            running_var = self.running_var.repeat(k)
            out = F.batch_norm(x.view(-1, c * k, h, w), running_mean, running_var, self.weight.repeat(k),
                               self.bias.repeat(k), True, self.momentum, self.eps).view(n, c, h, w)
            self.running_mean.data.copy_(running_mean.view(k, c).mean(0))
            self.running_var.data.copy_(running_var.view(k, c).mean(0))
            return out
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, self.momentum,
                            self.eps)


class RefBatchNorm1d(nn.BatchNorm1d):
    """The heads' ``nn.BatchNorm1d``, recording each training call's mean and unbiased variance."""

    def __init__(self, num_features):
        super().__init__(num_features)
        self.calls = []

    def forward(self, x):
        if self.training:
            self.calls.append((ViewTagger.view, x.detach().mean(0), x.detach().var(0)))
        return super().forward(x)


def ref_backbone():
    """network/base_model.py ``ModelBase_ResNet18`` (cifar10): network/resnet.py's
    ResNet-18 (torchvision's, copied) with SplitBatchNorm, its children in order with conv1
    swapped for a 3×3 stride-1 conv, no max-pool, fc replaced by Flatten; width WIDTH, not 64."""
    norm = partial(RefSplitBatchNorm, num_splits=SPLITS)
    stages, inplanes = [], WIDTH
    for planes, stride in ((WIDTH, 1), (2 * WIDTH, 2), (4 * WIDTH, 2), (8 * WIDTH, 2)):
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), norm(planes))
        stages.append(nn.Sequential(BasicBlock(inplanes, planes, stride, downsample, norm_layer=norm),
                                    BasicBlock(planes, planes, norm_layer=norm)))
        inplanes = planes
    return nn.Sequential(nn.Conv2d(3, WIDTH, 3, 1, 1, bias=False), norm(WIDTH), nn.ReLU(inplace=True), *stages,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def ref_head(*blocks):
    """network/heads.py ``ProjectionHead``: per block (in, out, batch norm, ReLU) a Linear
    with a bias only where no BN follows, then the BN, then the non-linearity."""
    layers = []
    for fan_in, fan_out, batch_norm, relu in blocks:
        layers.append(nn.Linear(fan_in, fan_out, bias=not batch_norm))
        if batch_norm:
            layers.append(RefBatchNorm1d(fan_out))
        if relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def deactivate_requires_grad(model):
    for p in model.parameters():
        p.requires_grad = False


def update_momentum(model, model_ema, m):
    """util/utils.py: θ_ema ← θ_ema·m + θ·(1 − m), parameters zipped in order."""
    for ema, p in zip(model_ema.parameters(), model.parameters(), strict=True):
        ema.data = ema.data * m + p.data * (1.0 - m)


def batch_shuffle(batch, draw):
    """util/utils.py (one GPU): the batch in a random order (``torch.randperm``) and it."""
    shuffle = draw(batch.shape[0])
    return batch[shuffle], shuffle


def batch_unshuffle(batch, shuffle):
    return batch[torch.argsort(shuffle)]


def generation_mask(topk, batch):
    """util/utils.py: the N × N·topk multi-hot target, row i ones at i·topk … i·topk + topk − 1."""
    eye = torch.eye(batch, dtype=torch.float64)
    return eye.repeat(topk, 1).reshape(topk, batch, -1).permute(2, 1, 0).reshape(batch, topk * batch)


class RefMemoryBank(nn.Module):
    """util/MemoryBankModule.py: a dim × size bank of raw outputs; a call returns a copy of
    the bank and, with ``update``, then enqueues the outputs (truncated at the end, the
    pointer back to 0). Started here from ``initial`` (size × dim) instead of random."""

    def __init__(self, initial):
        super().__init__()
        self.size = len(initial)
        self.register_buffer("bank", initial.T.clone())
        self.register_buffer("bank_ptr", torch.zeros(1, dtype=torch.long))

    def forward(self, output, update=False):
        bank = self.bank.clone().detach()
        if update:
            ptr, n = int(self.bank_ptr), output.shape[0]
            if ptr + n >= self.size:
                self.bank[:, ptr:] = output[: self.size - ptr].T.detach()
                self.bank_ptr[0] = 0
            else:
                self.bank[:, ptr : ptr + n] = output.T.detach()
                self.bank_ptr[0] = ptr + n
        return output, bank


class RefNNMemoryBank(RefMemoryBank):
    """util/NNMemoryBankModule.py: the top-k rows of the bank (as it was before the update)
    most cosine-similar to each query, raw, N·topk × dim (purity, a logged metric, left out)."""

    def __init__(self, initial, topk):
        super().__init__(initial)
        self.topk = topk

    def forward(self, querys, keys, update=False):
        _, bank = super().forward(keys, update)
        bank = bank.t()
        similarity = torch.einsum("nd,md->nm", F.normalize(querys, dim=1), F.normalize(bank, dim=1))
        _, index = similarity.topk(self.topk, dim=1, largest=True)
        return torch.index_select(bank, 0, index.reshape(-1))


class RefMoCo(nn.Module):
    """network/MoCo.py (4a82212), as main_pretrain_evaluation.sh runs it (--symmetric
    --tem 0.2 --momentum 0.99): EMA first; loss_21 against the bank as it is, then loss_12,
    whose keys (of view 2) are enqueued; shuffled BN for the keys."""

    def __init__(self, initial_queue, tem=0.2, momentum=0.99, symmetric=True):
        super().__init__()
        self.tem, self.momentum, self.symmetric = tem, momentum, symmetric
        self.net = ref_backbone()
        self.backbone_momentum = copy.deepcopy(self.net)
        self.projection_head = ref_head((8 * WIDTH, HIDDEN, False, True), (HIDDEN, DIM, False, False))
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.memory_bank = RefMemoryBank(initial_queue)
        self.draw = torch.randperm

    def contrastive_loss(self, im_q, im_k, update=False):
        z_q = self.projection_head(self.net(im_q))
        with torch.no_grad():
            im_k_, shuffle = batch_shuffle(im_k, self.draw)
            z_k = self.projection_head_momentum(self.backbone_momentum(im_k_)).clone().detach()
            z_k = batch_unshuffle(z_k, shuffle)
        _, bank = self.memory_bank(z_k, update=update)
        z_q, bank, z_k = F.normalize(z_q, dim=1), F.normalize(bank, dim=0), F.normalize(z_k, dim=1)
        l_pos = torch.einsum("nc,nc->n", z_q, z_k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", z_q, bank)
        logits = torch.cat([l_pos, l_neg], dim=1)
        return F.cross_entropy(logits / self.tem, torch.zeros(len(logits), dtype=torch.long))

    def forward(self, im1, im2):
        update_momentum(self.net, self.backbone_momentum, self.momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, self.momentum)
        if self.symmetric:
            loss_21 = self.contrastive_loss(im2, im1, update=False)
        loss_12 = self.contrastive_loss(im1, im2, update=True)
        return (loss_12 + loss_21) / 2 if self.symmetric else loss_12

    def students(self):
        return self.net, self.projection_head

    def teachers(self):
        return self.backbone_momentum, self.projection_head_momentum


class RefSimCLR(nn.Module):
    """network/SimCLR.py (8b84260) with --symmetric --tem 0.2: each direction runs the
    network on both views; cross-view logits, the diagonal the positives."""

    def __init__(self, tem=0.2, symmetric=True):
        super().__init__()
        self.tem, self.symmetric = tem, symmetric
        self.net = ref_backbone()
        self.projection_head = ref_head((8 * WIDTH, HIDDEN, True, True), (HIDDEN, DIM, True, False))

    def contrastive_loss(self, im_q, im_k):
        z_q = F.normalize(self.projection_head(self.net(im_q)), dim=1)
        z_k = F.normalize(self.projection_head(self.net(im_k)), dim=1)
        logits = torch.einsum("nc,mc->nm", z_q, z_k) / self.tem
        labels = torch.eye(len(z_q), dtype=torch.float64)
        return -torch.sum(labels * F.log_softmax(logits, dim=1), dim=1).mean()

    def forward(self, im1, im2):
        loss_12 = self.contrastive_loss(im1, im2)
        if self.symmetric:
            return (loss_12 + self.contrastive_loss(im2, im1)) / 2
        return loss_12

    def students(self):
        return self.net, self.projection_head


class RefBYOL(nn.Module):
    """network/BYOL.py (20b871d) with --symmetric --momentum 0.99 (constant): EMA first;
    2 − 2·cos between the online prediction and the shuffled-BN target of the other view."""

    def __init__(self, momentum=0.99, symmetric=True):
        super().__init__()
        self.momentum, self.symmetric = momentum, symmetric
        self.net = ref_backbone()
        self.backbone_momentum = copy.deepcopy(self.net)
        self.projection_head = ref_head((8 * WIDTH, HIDDEN, True, True), (HIDDEN, DIM, False, False))
        self.prediction_head = ref_head((DIM, HIDDEN, True, True), (HIDDEN, DIM, False, False))
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.draw = torch.randperm

    def contrastive_loss(self, im_q, im_k):
        p_q = self.prediction_head(self.projection_head(self.net(im_q)))
        with torch.no_grad():
            im_k_, shuffle = batch_shuffle(im_k, self.draw)
            z_k = self.projection_head_momentum(self.backbone_momentum(im_k_)).clone().detach()
            z_k = batch_unshuffle(z_k, shuffle)
        q, k = F.normalize(p_q, dim=1), F.normalize(z_k, dim=1)
        return torch.diag(2 - 2 * torch.einsum("bc,kc->bk", q, k)).mean()

    def forward(self, im1, im2):
        update_momentum(self.net, self.backbone_momentum, self.momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, self.momentum)
        loss_12 = self.contrastive_loss(im1, im2)
        if self.symmetric:
            return (loss_12 + self.contrastive_loss(im2, im1)) / 2
        return loss_12

    def students(self):
        return self.net, self.projection_head, self.prediction_head

    def teachers(self):
        return self.backbone_momentum, self.projection_head_momentum


class RefNNCLR(nn.Module):
    """network/NNCLR.py (4a82212) with --symmetric --tem 0.2 --topk 1: loss_21 against the
    bank as it is, then loss_12, whose view-2 projections are enqueued; each direction the
    mean of the neighbour-anchored and the prediction-anchored InfoNCE."""

    def __init__(self, initial_queue, topk=1, tem=0.2, symmetric=True):
        super().__init__()
        self.topk, self.tem, self.symmetric = topk, tem, symmetric
        self.net = ref_backbone()
        self.projection_head = ref_head((8 * WIDTH, HIDDEN, True, True), (HIDDEN, HIDDEN, True, True),
                                        (HIDDEN, DIM, True, False))
        self.prediction_head = ref_head((DIM, HIDDEN, True, True), (HIDDEN, DIM, False, False))
        self.memory_bank = RefNNMemoryBank(initial_queue, topk)

    def contrastive_loss(self, im_q, im_k, update=False):
        z_q = self.projection_head(self.net(im_q))
        p_q = self.prediction_head(z_q)
        z_k = self.projection_head(self.net(im_k))
        z_k_nn = self.memory_bank(querys=z_k, keys=z_k, update=update)
        p_q, z_k_nn = F.normalize(p_q, dim=1), F.normalize(z_k_nn, dim=1)
        logits_nn_1 = torch.einsum("nc,mc->nm", z_k_nn, p_q) / self.tem
        logits_nn_2 = torch.einsum("nc,mc->nm", p_q, z_k_nn) / self.tem
        labels_nn = generation_mask(self.topk, len(z_q))
        return -((torch.sum(labels_nn.t() * F.log_softmax(logits_nn_1, dim=1), dim=1).mean()
                  + torch.sum(labels_nn * F.log_softmax(logits_nn_2, dim=1), dim=1).mean()) / 2.0)

    def forward(self, im1, im2):
        if self.symmetric:
            loss_21 = self.contrastive_loss(im2, im1, update=False)
        loss_12 = self.contrastive_loss(im1, im2, update=True)
        return (loss_12 + loss_21) / 2 if self.symmetric else loss_12

    def students(self):
        return self.net, self.projection_head, self.prediction_head


def reference_steps(model, views, after_step):
    """main_pretrain.py ``main``/``train`` (93e06b7): SGD over model.parameters() (momentum
    0.9, weight decay 5e-4 on every parameter; the frozen momentum copies get no gradient),
    lr per iteration from cosine_scheduler(base_lr·batch/256, 0, epochs, iterations,
    warmup_epochs); each iteration sets the lr, computes the loss, zero_grad, backward, step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR_PER_256, momentum=0.9, weight_decay=5e-4)
    schedule = cosine_scheduler(LR_PER_256 * N / 256.0, 0.0, EPOCHS, STEPS_PER_EPOCH, warmup_epochs=WARMUP_EPOCHS)
    model.train()
    ViewTagger.attach(*[net for net in (model.net, getattr(model, "backbone_momentum", None)) if net is not None])
    losses = []
    for it, (im1, im2) in enumerate(views):
        ViewTagger.step_views = (im1, im2)
        for group in optimizer.param_groups:
            group["lr"] = schedule[it]
        loss = model(im1, im2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        after_step()
    return losses


# ---------------------------------------------------------------------------------------
# fastssl's side and the comparison.


def fastssl_method(name, **changes):
    """The recipe's method with its MethodConfig (sizes shrunk, ``changes``), on a width-4
    ResNet-18 with split-BN in groups of GROUP, in float64, its networks called once per
    view of N images (as a training run builds it)."""
    recipe = recipes.get(name)
    cfg = recipe.config(**changes)
    backbone = build_backbone("resnet18", True, False, WIDTH, "split_bn", GROUP)
    method = recipe.method(cfg, backbone).double().to(memory_format=torch.channels_last)
    method.call_per_view(N)
    return method


def views(steps=STEPS):
    """Per step fastssl's batch (view-major, channels-last) and Mini-SSL's two views (its
    positions holding fastssl's images INTERLEAVE)."""
    fast, ref = [], []
    for _ in range(steps):
        x1, x2 = torch.randn(2, N, 3, 16, 16, dtype=torch.float64)
        images = torch.cat([x1, x2]).contiguous(memory_format=torch.channels_last)
        fast.append(ViewBatch({"global": images}, torch.arange(N), torch.zeros(N, dtype=torch.long), {}))
        ref.append((x1[INTERLEAVE].contiguous(), x2[INTERLEAVE].contiguous()))
    return fast, ref


LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)


def layers(*modules):
    return [m for module in modules for m in module.modules() if isinstance(m, LAYERS)]


def paired_layers(fast_modules, ref_modules):
    """fastssl's layers and Mini-SSL's, by position (the same order of convolutions, linear
    and BN layers); checks kinds and shapes."""
    pairs = list(zip(layers(*fast_modules), layers(*ref_modules), strict=True))
    for f, r in pairs:
        kinds = [next(k for k in LAYERS if isinstance(m, k)) for m in (f, r)]
        assert kinds[0] is kinds[1] and f.weight.shape == r.weight.shape, (f, r)
    return pairs


@torch.no_grad()
def copy_weights(pairs, zero_extra_bias=True):
    """fastssl's weights into Mini-SSL's layers. A bias fastssl has before a BN where
    Mini-SSL's heads have none (BYOL's and NNCLR's predictor, BYOL's projector) is set to 0,
    so both start from the same function and the same statistics (see the xfail test)."""
    for f, r in pairs:
        r.weight.copy_(f.weight)
        if r.bias is not None:
            r.bias.copy_(f.bias)
        elif f.bias is not None and zero_extra_bias:
            f.bias.zero_()


class RunningStatsReplay:
    """What fastssl's BN buffers should hold: from the same start, per step one update per
    view, view 1 then view 2, with the batch statistics Mini-SSL's layers recorded for that
    view (a view Mini-SSL ran twice in a step, as SimCLR and NNCLR do, gave the same
    statistics both times: checked)."""

    def __init__(self, pairs):
        bn = [(f, r) for f, r in pairs if isinstance(f, nn.modules.batchnorm._BatchNorm)]
        self.pairs = bn
        self.expected = {f: (f.running_mean.clone(), f.running_var.clone()) for f, _ in bn}

    def step(self):
        for f, r in self.pairs:
            calls, r.calls = r.calls, []
            assert f.momentum == r.momentum
            for view in (0, 1):
                of_view = [(mean, var) for tag, mean, var in calls if tag == view]
                assert of_view, f"{r}: no call on view {view + 1}"
                for mean, var in of_view[1:]:
                    torch.testing.assert_close(mean, of_view[0][0], rtol=RTOL, atol=ATOL)
                    torch.testing.assert_close(var, of_view[0][1], rtol=RTOL, atol=ATOL)
                self.expected[f][0].lerp_(of_view[0][0], r.momentum)
                self.expected[f][1].lerp_(of_view[0][1], r.momentum)

    def check(self):
        for f, _ in self.pairs:
            torch.testing.assert_close(f.running_mean, self.expected[f][0], rtol=RTOL, atol=ATOL)
            torch.testing.assert_close(f.running_var, self.expected[f][1], rtol=RTOL, atol=ATOL)


def assert_weights_match(pairs, zero_extra_bias=True):
    for f, r in pairs:
        torch.testing.assert_close(f.weight, r.weight, rtol=RTOL, atol=ATOL)
        if r.bias is not None:
            torch.testing.assert_close(f.bias, r.bias, rtol=RTOL, atol=ATOL)
        elif f.bias is not None and zero_extra_bias:  # gradient 0 before BN, 0 decays to 0
            torch.testing.assert_close(f.bias, torch.zeros_like(f.bias), rtol=0, atol=ATOL)


def in_fastssl_order(rows):
    """Mini-SSL's queue rows (slot order) in fastssl's: its slot s + p holds the key of
    fastssl's image INTERLEAVE[p] of a batch enqueued at s."""
    out = rows.clone()
    for start in range(0, len(rows), N):
        out[start + INTERLEAVE] = rows[start : start + N]
    return out


def order_of(shuffled, images):
    """The permutation o with shuffled = images[o], of 2N view-major images shuffled within
    each view (rows matched exactly, view by view)."""
    orders = []
    for v in range(2):
        rows = slice(v * N, (v + 1) * N)
        same = (shuffled[rows].flatten(1)[:, None] == images[rows].flatten(1)[None]).all(-1)
        assert (same.sum(1) == 1).all(), "the teacher's batch is not a shuffle within each view"
        orders.append(same.float().argmax(1) + v * N)
    return torch.cat(orders)


def reference_shuffles(method, batch):
    """Mini-SSL's batch_shuffle permutations (one per teacher call, in the order its forward
    calls the teacher: per view) that put into each of its split-BN groups of the keys the
    images fastssl's teacher put into the same group: s = INTERLEAVE⁻¹ ∘ o ∘ INTERLEAVE for
    fastssl's order o of a view (from the input its teacher network received)."""
    inverse = torch.argsort(INTERLEAVE)
    o = order_of(method.captured[-1], batch.views["global"])
    return [inverse[(o[v * N : (v + 1) * N] - v * N)[INTERLEAVE]] for v in range(2)]


def capture_teacher_inputs(method):
    method.captured = []
    method.teacher.network.register_forward_pre_hook(lambda _, args: method.captured.append(args[0].clone()))


def fastssl_stepper(name, method):
    """fastssl's own step with the recipe's optimiser settings, the schedule shortened."""
    optim = dataclasses.replace(recipes.get(name).optim, epochs=EPOCHS, batch_size=N, lr_per_256=LR_PER_256,
                                warmup_epochs=float(WARMUP_EPOCHS))
    return Stepper(name, method, train_config(method, optim), STEPS_PER_EPOCH)


def run_both(name, method, ref, zero_extra_bias=True, steps=STEPS, key_views=(0, 1)):
    """Copies fastssl's weights into ``ref``, takes ``steps`` steps of each on the same
    independent views and returns (fastssl's losses, Mini-SSL's, student layer pairs,
    teacher layer pairs, the running-statistics replay). ``key_views``: the view whose keys
    each of Mini-SSL's teacher calls of a step shuffles, in the order it makes them."""
    student_pairs = paired_layers([method.student], ref.students())
    copy_weights(student_pairs, zero_extra_bias)
    teacher_pairs = []
    if hasattr(ref, "teachers"):
        teacher_pairs = paired_layers([method.teacher.network], ref.teachers())
        copy_weights(teacher_pairs, zero_extra_bias)
        capture_teacher_inputs(method)
    replay = RunningStatsReplay(student_pairs + teacher_pairs)
    fast_batches, ref_views = views(steps)
    stepper, fast_losses, shuffles = fastssl_stepper(name, method), [], []
    for step, b in enumerate(fast_batches):
        fast_losses.append(stepper(b, step))
        if teacher_pairs:
            per_view = reference_shuffles(method, b)
            shuffles += [per_view[v] for v in key_views]
    if teacher_pairs:
        queued = iter(shuffles)
        ref.draw = lambda n: next(queued)
    ref_losses = reference_steps(ref.double(), ref_views[:steps], replay.step)
    return fast_losses, ref_losses, student_pairs, teacher_pairs, replay


def assert_queue_matches(queue: FeatureQueue, ref_bank: RefMemoryBank):
    assert int(queue.pointer) == int(ref_bank.bank_ptr)
    expected = in_fastssl_order(F.normalize(ref_bank.bank.T, dim=1))
    torch.testing.assert_close(queue.features, expected, rtol=RTOL, atol=ATOL)


def assert_step_matches(fast_losses, ref_losses, student_pairs, teacher_pairs, replay):
    torch.testing.assert_close(torch.stack(fast_losses), torch.stack(ref_losses), rtol=RTOL, atol=ATOL)
    assert_weights_match(student_pairs)
    assert_weights_match(teacher_pairs)
    replay.check()


# ---------------------------------------------------------------------------------------
# The tests.


def test_mocov2_step_matches_reference():
    """Symmetric MoCo v2: EMA before the forward pass at a constant 0.99, both directions
    against the queue as it was before the step and view 2's keys enqueued after it
    (4a82212), keys through shuffled BN, SGD with weight decay on every parameter, the
    lr per step, warm-up then cosine."""
    method = fastssl_method("mocov2", queue_size=QUEUE, proj_hidden=HIDDEN, proj_dim=DIM)
    ref = RefMoCo(method.queue.features.clone())
    # Mini-SSL's forward calls the teacher on view 1's keys (loss_21), then view 2's (loss_12).
    results = run_both("mocov2", method, ref, key_views=(0, 1))
    assert_step_matches(*results)
    assert_queue_matches(method.queue, ref.memory_bank)


def test_simclr_step_matches_reference():
    """SimCLR's symmetric cross-view InfoNCE, the network run once per view (Mini-SSL: once
    per view and direction, four calls a step, with gradient through each), the heads' BN
    in training mode."""
    method = fastssl_method("simclr", proj_hidden=HIDDEN, proj_dim=DIM)
    assert_step_matches(*run_both("simclr", method, RefSimCLR()))


def test_byol_step_matches_reference():
    """BYOL as Mini-SSL runs it, the recipe's defaults: constant EMA 0.99 applied before the
    forward pass, the target's batch shuffled across BN groups, 2 − 2·cos both ways averaged."""
    method = fastssl_method("byol", proj_hidden=HIDDEN, proj_dim=DIM, pred_hidden=HIDDEN)
    # Mini-SSL's forward calls the target on view 2 (loss_12), then view 1 (loss_21).
    assert_step_matches(*run_both("byol", method, RefBYOL(), key_views=(1, 0)))


@pytest.mark.parametrize("top_k", [1, 2])
def test_nnclr_step_matches_reference(top_k):
    """NNCLR, symmetric: each view's prediction against the neighbours of the other view's
    projection in the support set as it was before the step, view 2's projections enqueued
    after it (4a82212); top-1 (Mini-SSL's runs *_5) and top-2 (its multi-hot top-k loss)."""
    method = fastssl_method("nnclr", memory_size=QUEUE, proj_hidden=HIDDEN, proj_dim=DIM, pred_hidden=HIDDEN,
                            top_k=top_k)
    ref = RefNNCLR(method.support.features.clone(), topk=top_k)
    assert_step_matches(*run_both("nnclr", method, ref))
    assert_queue_matches(method.support, ref.memory_bank)


def test_byol_target_batch_is_shuffled_across_bn_groups():
    """The step test maps whatever order fastssl's target ran in into Mini-SSL's draws, so it
    would pass unshuffled too: this checks that the BN groups of the target get other images."""
    method = fastssl_method("byol", proj_hidden=HIDDEN, proj_dim=DIM, pred_hidden=HIDDEN)
    capture_teacher_inputs(method)
    b = views(1)[0][0]
    method(b)
    group = torch.arange(2 * N) // GROUP
    assert (group[order_of(method.captured[-1], b.views["global"])] != group).any()


def test_byol_recipe_keeps_the_ema_momentum_constant():
    cfg = recipes.get("byol").config()
    assert isinstance(cfg, BYOLConfig) and cfg.momentum_final is None and cfg.momentum == 0.99


def test_lr_warmup_matches_reference():
    """Mini-SSL's cosine_scheduler at a longer warm-up than the step tests take."""
    steps_per_epoch, epochs, warmup_epochs = 4, 3, 1
    o = dataclasses.replace(recipes.get("mocov2").optim, epochs=epochs, batch_size=N, lr_per_256=LR_PER_256,
                            warmup_epochs=float(warmup_epochs))
    parts = SimpleNamespace(cfg=SimpleNamespace(optim=o), steps_per_epoch=steps_per_epoch)
    fast = [learning_rate(parts, Progress(s // steps_per_epoch, s % steps_per_epoch, steps_per_epoch, epochs))
            for s in range(epochs * steps_per_epoch)]
    ref = cosine_scheduler(LR_PER_256 * N / 256.0, 0.0, epochs, steps_per_epoch, warmup_epochs)
    np.testing.assert_allclose(fast, ref, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------
# Where fastssl departs from Mini-SSL, as a kept choice (docs/DESIGN.md, "Recipe notes").


@pytest.mark.xfail(strict=True, reason="kept: the hidden Linear before BN in BYOL's heads (and NNCLR's "
                   "predictor) has a bias, initialised nonzero, which BN cancels in training but which enters that "
                   "BN's running mean (read by no evaluation); Mini-SSL's heads have none")
def test_byol_head_running_means_match_reference_with_fastssl_initial_biases():
    method = fastssl_method("byol", proj_hidden=HIDDEN, proj_dim=DIM, pred_hidden=HIDDEN)
    fast_losses, ref_losses, student_pairs, teacher_pairs, replay = run_both(
        "byol", method, RefBYOL(), zero_extra_bias=False, steps=2, key_views=(1, 0))
    torch.testing.assert_close(torch.stack(fast_losses), torch.stack(ref_losses), rtol=RTOL, atol=ATOL)  # equal
    replay.check()  # the running means of the heads' hidden BN layers are not
