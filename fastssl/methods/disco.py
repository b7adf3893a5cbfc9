"""DisCo — "DisCo: Remedy Self-supervised Learning on Lightweight Models with Distilled
Contrastive Learning" (Gao et al., ECCV 2022).

The student learns by MoCo v2 — its query embedding of one view pulled to the key a
momentum copy of it makes of the other view, against a queue of past keys — and, at the
same time, its final embedding of each view is pulled to the frozen teacher's final
embedding of the same view: the squared distance of the unit vectors, summed over the batch
(``fastssl.losses.distillation.disco_distillation``), added to the contrastive loss with
weight 1. The teacher sees the augmented views (nothing is cached).

Follows Yuting-Gao/DisCo-pytorch at 1d732c8, ``DisCo/moco/builder_kq_mse_largeembedding_2048.py``
(the builder ``DisCo/main.py`` uses): the student's head is D → 2048 (ReLU) → 128 whatever
its width D (the "large embedding" bottleneck the paper argues for), the query encoder
embeds both views for the distillation, the contrastive term is MoCo's one direction
(query of view 1, key of view 2); ``DisCo/main.py`` L263, L434–442 for the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import nn

from fastssl.config import OptimConfig
from fastssl.losses.distillation import disco_distillation
from fastssl.losses.infonce import queue_info_nce
from fastssl.methods.base import EMATeacher, Encoder, MethodOutput, Progress
from fastssl.methods.distillation import Distiller, TeacherConfig
from fastssl.methods.memory import FeatureQueue
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.recipes import register
from pipelines.batch import ViewBatch
from pipelines.spec import ViewConfig


@dataclass(frozen=True)
class DisCoConfig(TeacherConfig):
    # DisCo/main.py's MoCo v2 settings (--moco-m 0.999, --moco-t 0.2 in its scripts, --mlp)
    # but the queue, sized for ImageNet (65,536): on CIFAR the MoCo v2 recipe's 4,096.
    temperature: float = 0.2  # τ of the contrastive term
    momentum: float = 0.999  # the key encoder's EMA
    queue_size: int = 4096  # K past keys (DisCo's ImageNet runs: 65,536)
    proj_hidden: int = 2048  # the student head's hidden width, whatever the backbone's
    distill_weight: float = 1.0  # the distillation term's weight (DisCo/main.py: 1)
    distill_reduction: Literal["sum", "mean"] = "sum"  # over the batch: the authors' sum, or a mean
    shuffle_bn: bool = True  # the keys' batch shuffled across BN groups (MoCo, §3.3)


class DisCo(Distiller):
    key_encoder: EMATeacher

    def __init__(self, cfg: DisCoConfig, backbone: Backbone, student_view: ViewConfig, data: Path) -> None:
        super().__init__(cfg, student_view, data)
        self.cfg = cfg
        embedding = self.teacher_embedding_dim  # the student's embedding has the teacher's width
        self.student = Encoder(backbone, mlp([backbone.feature_dim, cfg.proj_hidden, embedding]))
        self.key_encoder = EMATeacher(self.student, cfg.momentum)
        self.queue = FeatureQueue(cfg.queue_size, embedding)

    def before_step(self, progress: Progress) -> None:
        self.key_encoder.update(self.student)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]
        student = self.encode(images)
        q1, _ = student.projection.chunk(2)
        _, second = images.chunk(2)
        k2 = self.key_encoder.projections(second, 1, self.cfg.shuffle_bn)
        contrastive = queue_info_nce(q1, k2, self.queue.features, self.cfg.temperature)
        teacher = self.frozen_teacher(images).embedding
        distill = disco_distillation(student.projection, teacher, self.cfg.distill_reduction)
        return MethodOutput(loss=contrastive + self.cfg.distill_weight * distill, features=student.features.detach(),
                            embedding=q1.detach(), enqueue={"queue": k2},
                            metrics={"contrastive": contrastive.detach(), "distill": distill.detach()})

    def compiled_networks(self) -> list[nn.Module]:
        return [*super().compiled_networks(), self.key_encoder.network]


# DisCo/main.py: SGD lr 0.03 at batch 256, momentum 0.9, weight decay 1e-4, 200 epochs, cosine
# (--cos), no warm-up; Mini-SSL's two views (its --aug-plus is MoCo v2's, the same ops).
register(
    "disco", DisCo, DisCoConfig, summary="DisCo: MoCo v2 for the student plus the teacher's final embedding distilled",
    optim=OptimConfig(epochs=200, lr_per_256=0.03, weight_decay=1e-4, warmup_epochs=0.0),
)
