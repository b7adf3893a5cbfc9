"""ReSSL — "ReSSL: Relational Self-Supervised Learning with Weak Augmentation" (Zheng et
al., 2021), as Mini-SSL runs it on CIFAR: one direction, split-BN, shuffled teacher batch.

A student (backbone and projector) learns; a teacher follows it by EMA (θ_t ← m·θ_t +
(1−m)·θ_s, constant m, applied before each forward pass). Instead of contrasting a positive
with negatives, the student matches the teacher's *relations*: how the teacher embedding of
the other view is distributed over a memory of K past teacher embeddings, sharpened by a
lower temperature (Eq. 4–5). The teacher sees a weak view (crop and flip only), whose
relations are reliable, the student a strong one. The memory receives the teacher's
embeddings of the weak view after the optimiser step. With ``symmetric`` the views also
swap roles and the two directions are averaged (SCE's setting; off in Mini-SSL's ReSSL).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from fastssl.losses.relational import ressl_loss
from fastssl.methods.base import EMATeacher, Encoder, Method, MethodOutput, Progress
from fastssl.methods.memory import FeatureQueue
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.recipes import register
from fastssl.recipes.defaults import MINI_SSL_STRONG_WEAK, mini_ssl_tiny_imagenet
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class ReSSLConfig:
    temperature: float = 0.1  # student τ_s (hard-coded in Mini-SSL's ReSSL.py; solo-learn's CIFAR config)
    teacher_temperature: float = 0.04  # τ_t, sharper than τ_s (Mini-SSL script --tem 0.04)
    momentum: float = 0.99  # teacher EMA m, constant (Mini-SSL CIFAR; Tiny-ImageNet 0.996)
    memory_size: int = 4096  # past teacher embeddings (Mini-SSL CIFAR; Tiny-ImageNet 16384)
    proj_hidden: int = 2048  # projector 512→2048→128, no BN (Mini-SSL's MoCoProjectionHead)
    proj_dim: int = 128  # projection (embedding) dimension
    symmetric: bool = False  # also the weak view through the student, directions averaged (Mini-SSL: off)
    shuffle_bn: bool = True  # shuffle the teacher batch across BN groups (Mini-SSL batch_shuffle)


class ReSSL(Method):
    teacher: EMATeacher
    cfg: ReSSLConfig

    def __init__(self, cfg: ReSSLConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        projector = mlp([backbone.feature_dim, cfg.proj_hidden, cfg.proj_dim])
        self.student = Encoder(backbone, projector)
        self.teacher = EMATeacher(self.student, cfg.momentum)
        self.memory = FeatureQueue(cfg.memory_size, cfg.proj_dim)

    def before_step(self, progress: Progress) -> None:
        self.teacher.update(self.student)

    def objective(self, query: Tensor, key: Tensor, memory: Tensor) -> Tensor:
        """One direction: the student's relations of ``query`` to the teacher's of ``key``."""
        return ressl_loss(query, key, memory, self.cfg.temperature, self.cfg.teacher_temperature)

    def keys(self, images: Tensor, views: int) -> Tensor:
        return self.teacher.projections(images, views, self.cfg.shuffle_bn)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]  # strong first views, then weak second views
        memory = self.memory.features  # as it was before this step, for both directions
        if self.cfg.symmetric:
            student = self.encode(images)
            q_strong, q_weak = student.projection.chunk(2)
            k_strong, k_weak = self.keys(images, 2).chunk(2)
            loss = 0.5 * (self.objective(q_strong, k_weak, memory) + self.objective(q_weak, k_strong, memory))
        else:  # the student needs only the strong view, the teacher only the weak one
            strong, weak = images.chunk(2)
            student = self.encode(strong)
            q_strong = student.projection
            k_weak = self.keys(weak, 1)
            loss = self.objective(q_strong, k_weak, memory)
        # The memory takes this step's teacher embeddings of the weak view, after the step.
        return MethodOutput(loss=loss, features=student.features.detach(), embedding=q_strong.detach(),
                            enqueue={"memory": k_weak})


# Mini-SSL's recipe (main_pretrain_evaluation.sh with --weak and no --symmetric; ReSSL.py).
# Sources disagree: solo-learn's CIFAR config uses a 4096-wide 256-d projector, a 65,536
# memory, EMA 0.99 → 1 (cosine), SGD 0.05 wd 1e-4 for 1000 epochs, crops of scale (0.08, 1)
# and a weak flip of p 0.5; the official ReSSL code (ImageNet) a flip of p 0.5.
register(
    "ressl", ReSSL, ReSSLConfig, summary="ReSSL, weak teacher view · Mini-SSL",
    views=MINI_SSL_STRONG_WEAK, presets=mini_ssl_tiny_imagenet(ReSSLConfig),
)
