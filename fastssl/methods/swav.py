"""SwAV — "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments"
(Caron et al., 2020), with solo-learn's CIFAR settings.

Each view's projection z (unit length) is scored against K learnable prototypes c_k. The
codes q of a global view are the soft assignment of the batch to the prototypes under an
equipartition constraint, computed without gradient by three Sinkhorn–Knopp iterations
(Eq. 3); every other view must predict them from its own scores (the swapped prediction,
Eq. 1–2). With multi-crop (§3.2) the local views only predict: codes come from the global
views alone.

Details of the training loop: the prototypes' gradients are dropped for the first epochs,
while the assignments are still random; and since a batch is small next to K prototypes,
the codes are computed over a queue of recent projections too (§3.1, "Working with small
batches"), scored with the current prototypes, their codes discarded.

The prototypes are unit vectors, parameterised as solo-learn does (``weight_norm`` with the
gain fixed at 1: C = V/‖V‖ row by row, ``models.heads.Prototypes``), so the gradient has no
radial part and weight decay and LARS's trust ratio act on V. The SwAV authors instead score
with V itself and put V back on the sphere in place before every step
(``--method.renormalize-prototypes``: the scores are then theirs, and only the radial part of
the gradient, which their renormalisation undoes at the next step, is absent). solo-learn
wins by default because the rest of the recipe (LARS at 0.6, wd 1e-6, K 3000, the queue) is
its CIFAR recipe, tuned with its parameterisation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

import torch
from torch import Tensor, nn

from fastssl.distributed import rank, world_size
from fastssl.losses.swav import sinkhorn_knopp, swapped_prediction
from fastssl.methods.base import Method, MethodOutput, Progress, PrototypeEncoder
from fastssl.methods.memory import FeatureQueue
from fastssl.models.backbone import Backbone
from fastssl.models.heads import Prototypes, mlp
from fastssl.recipes import lightly, register
from fastssl.recipes.defaults import SOLO_LARS, SOLO_MODEL, SOLO_SYMMETRIC_VIEW, multi_crop
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class SwAVConfig:
    temperature: float = 0.1  # τ of the swapped prediction (paper; solo-learn CIFAR)
    epsilon: float = 0.05  # ε, the entropy weight of the codes (paper; solo-learn)
    sinkhorn_iterations: int = 3  # (paper; solo-learn)
    prototypes: int = 3000  # K (paper; solo-learn CIFAR)
    proj_hidden: int = 2048  # projection 512→2048 (BN, ReLU)→128 (paper; solo-learn CIFAR)
    proj_dim: int = 128  # projection (embedding) dimension
    # Past projections per global view added to the assignments (solo-learn CIFAR: 3840;
    # 0 turns the queue off), from this epoch on (solo-learn: 50 of its 1000 epochs, scaled
    # to fastssl's 200). Filled from the start, so it is full when first used.
    queue_size: int = 3840  # past projections per global view in the assignments (0: no queue)
    queue_start_epoch: int = 10  # first epoch whose assignments use the queue
    freeze_prototypes_epochs: int = 2  # no prototype updates before (solo-learn CIFAR; paper: 1 epoch)
    # Put the prototypes back on the unit sphere in place before every step (the authors'
    # code) besides normalising them in the forward pass (solo-learn's weight_norm)
    renormalize_prototypes: bool = False  # renormalise V in place before every step (the SwAV authors)


class SwAV(Method):
    student: PrototypeEncoder

    def __init__(self, cfg: SwAVConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        projector = mlp([backbone.feature_dim, cfg.proj_hidden, cfg.proj_dim], hidden_bn=True)
        self.student = PrototypeEncoder(backbone, projector, Prototypes(cfg.proj_dim, cfg.prototypes))
        # One queue per global view: view v's codes are computed among its own past projections.
        views_queued = 2 if cfg.queue_size > 0 else 0
        self.queues = nn.ModuleList(FeatureQueue(cfg.queue_size, cfg.proj_dim) for _ in range(views_queued))
        self.epoch = 0  # of the current step, from the host's Progress: no device read decides a switch

    def before_step(self, progress: Progress) -> None:
        self.epoch = progress.epoch
        if self.cfg.renormalize_prototypes:
            self.student.prototypes.normalize_()

    @torch.no_grad()
    def assign(self, scores: Tensor) -> Tensor:
        """Codes (2×N×K) of the global views' scores (2×N×K). Once the queue is on, each
        view's stored projections join its Sinkhorn–Knopp problem; every process takes its
        share of them, so together they hold each stored projection once."""
        use_queue = len(self.queues) > 0 and self.epoch >= self.cfg.queue_start_epoch
        codes = []
        for view, view_scores in enumerate(scores):
            if use_queue:
                stored = cast(FeatureQueue, self.queues[view]).features.tensor_split(world_size())[rank()]
                view_scores = torch.cat([view_scores, self.student.prototypes(stored).to(view_scores.dtype)])
            codes.append(sinkhorn_knopp(view_scores, self.cfg.epsilon, self.cfg.sinkhorn_iterations)[: scores.shape[1]])
        return torch.stack(codes)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        global_views, scores = self.encode_multi_crop(batch)  # V×N×K, the two global views first
        codes = self.assign(scores[:2].detach())
        loss = swapped_prediction(scores, codes, self.cfg.temperature)
        # Each global view's queue takes this step's projections of that view, after the step.
        projections = global_views.projection.detach()
        enqueue = {f"queues.{view}": p for view, p in enumerate(projections.chunk(2))} if len(self.queues) else {}
        return MethodOutput(loss=loss, features=global_views.features.detach(),
                            embedding=projections[: batch.batch_size], enqueue=enqueue)

    def after_backward(self) -> None:
        """Drop the prototypes' gradients in the first epochs (the optimiser then skips them:
        no step, no weight decay, no momentum), as the paper and solo-learn do."""
        if self.epoch < self.cfg.freeze_prototypes_epochs:
            self.student.prototypes.weight.grad = None


# solo-learn's CIFAR swav.yaml: its symmetric views, LARS at lr 0.6 × batch/256 with wd 1e-6
# (warm-up from 3e-5), plain BN over each view's batch and weight-normalised prototypes, 200
# epochs (fastssl's CIFAR budget; solo-learn trains 1000). Multi-crop: solo-learn's
# CIFAR SwAV uses 2 crops and no local ones; ``--local-crops 6`` gives the paper's 2+6 at
# CIFAR scale, whose global crops then narrow to scale 0.14–1 (``--views.crop-scale 0.14 1``).
# ``lightly``: its SwaVModel (fastssl/recipes/lightly.py): SwaVLoss() (τ 0.1, 3 Sinkhorn
# iterations at ε 0.05), SwaVProjectionHead(512, 2048, 128), SwaVPrototypes(128, 3000) put back on
# the sphere before every step (``prototypes.normalize()``) and never frozen, no queue (its
# SwaVQueueModel is another model), and torch.optim.Adam(lr=1e-3 * lr_factor, weight_decay=1e-6)
# with CosineAnnealingLR, no warm-up. Not expressible: Adam's L2 weight decay (fastssl's AdamW
# decouples it), the prototypes' bias (an nn.Linear's) and the radial part of their gradient, which
# Adam's moments see (fastssl normalises V in the forward pass); its 2×128 + 6×64 px crops are views.
_OPTIM = replace(SOLO_LARS, lr_per_256=0.6, weight_decay=1e-6)
register(
    "swav", SwAV, SwAVConfig, summary="SwAV, Sinkhorn, prototypes, queue, multi-crop option · solo-learn (LARS)",
    views=multi_crop(SOLO_SYMMETRIC_VIEW), optim=_OPTIM, model=SOLO_MODEL,
    conventions={"lightly": lightly.convention(
        SwAVConfig(), _OPTIM, SOLO_MODEL, model=lightly.MODEL,
        optim={"optimizer": "adamw", "lr_per_256": 1e-3, "lr_scaling": "linear", "momentum": 0.9,
               "weight_decay": 1e-6, "warmup_epochs": 0.0},
        method={"temperature": 0.1, "epsilon": 0.05, "sinkhorn_iterations": 3, "prototypes": 3000,
                "proj_hidden": 2048, "proj_dim": 128, "queue_size": 0, "freeze_prototypes_epochs": 0,
                "renormalize_prototypes": True})},
)
