"""MoCo v2 — "Improved Baselines with Momentum Contrastive Learning" (Chen et al., 2020),
on "Momentum Contrast for Unsupervised Visual Representation Learning" (He et al., 2020),
as Mini-SSL runs it on CIFAR: symmetric loss, split-BN, shuffled keys.

A query encoder f_q learns; a key encoder f_k follows it by EMA (θ_k ← m·θ_k + (1−m)·θ_q,
applied before each forward pass). Each query is pulled towards the key of the other view
of its image and pushed from a queue of K past keys (Eq. 1). Symmetric: both views serve as
queries, the loss is the mean of the two directions, and the queue receives the keys of
the second view only (Mini-SSL's ``loss_12``), ``batch`` keys per step.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastssl.losses.infonce import Backend, queue_info_nce
from fastssl.methods.base import EMATeacher, Encoder, Method, MethodOutput, Progress
from fastssl.methods.memory import FeatureQueue
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.recipes import preset, register
from fastssl.recipes.defaults import mini_ssl_tiny_imagenet
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class MoCoV2Config:
    temperature: float = 0.2  # τ (Mini-SSL script; the paper: 0.2)
    momentum: float = 0.99  # key-encoder EMA m, constant (Mini-SSL CIFAR; Tiny-ImageNet 0.996)
    queue_size: int = 4096  # K negatives (Mini-SSL CIFAR; Tiny-ImageNet 16384)
    proj_hidden: int = 2048  # projection 512→2048→128, no BN (Mini-SSL heads.py)
    proj_dim: int = 128  # projection (embedding) dimension
    symmetric: bool = True  # both views as queries, loss averaged (Mini-SSL --symmetric)
    shuffle_bn: bool = True  # shuffle the key batch across BN groups (He et al., §3.3)
    # InfoNCE log-sum-exp: auto (fused Triton kernel on CUDA, else plain) | plain | chunked | fused
    loss_backend: Backend = "auto"
    """InfoNCE log-sum-exp: auto (fused Triton kernel on CUDA, else plain) | plain | chunked | fused."""


class MoCoV2(Method):
    teacher: EMATeacher

    def __init__(self, cfg: MoCoV2Config, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        projector = mlp([backbone.feature_dim, cfg.proj_hidden, cfg.proj_dim])
        self.student = Encoder(backbone, projector)
        self.teacher = EMATeacher(self.student, cfg.momentum)
        self.queue = FeatureQueue(cfg.queue_size, cfg.proj_dim)

    def before_step(self, progress: Progress) -> None:
        self.teacher.update(self.student)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]
        student = self.encode(images)
        q1, q2 = student.projection.chunk(2)
        k1, k2 = self.teacher.projections(images, 2, self.cfg.shuffle_bn).chunk(2)
        # Both directions see the queue as it was before this step (Mini-SSL's later commit):
        # the keys of the second view go in after the optimiser step.
        negatives = self.queue.features
        tau, backend = self.cfg.temperature, self.cfg.loss_backend
        loss = queue_info_nce(q1, k2, negatives, tau, backend)
        if self.cfg.symmetric:
            loss = 0.5 * (loss + queue_info_nce(q2, k1, negatives, tau, backend))
        return MethodOutput(loss=loss, features=student.features.detach(), embedding=q1.detach(),
                            enqueue={"queue": k2})


# Mini-SSL's recipe: the project's defaults (main_pretrain_evaluation.sh, data_public.py).
register(
    "mocov2", MoCoV2, MoCoV2Config, summary="MoCo v2, symmetric, queue, shuffled BN · Mini-SSL",
    presets={
        **mini_ssl_tiny_imagenet(MoCoV2Config),
        # The README's first command: a short schedule on the embedded CIFAR-10 sample that
        # fits ~10 minutes on 2 CPU cores (fastssl-tuned: narrow ResNet-18, short schedule).
        # Batch 64 in 2 BN groups of 32 (Mini-SSL's group size) at Mini-SSL's lr 0.06;
        # queue 1024 < 5,000 training images − one batch.
        "demo": preset(
            "cifar10", model={"width": 16, "bn_splits": 2},
            optim={"epochs": 8, "batch_size": 64, "lr_per_256": 0.24, "warmup_epochs": 1},
            method={"queue_size": 1024}, run={"name": "demo-mocov2", "knn_every_epochs": 4, "log_every_steps": 10},
        ),
    },
)
