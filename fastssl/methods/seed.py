"""SEED — "SEED: Self-supervised Distillation for Visual Representation" (Fang et al., ICLR
2021).

The student (a small backbone and a two-layer MLP to the teacher's embedding width) and the
frozen teacher see the same augmented view of each image. The anchors are the teacher's
embedding of that image and a queue of K past teacher embeddings; against them each network's
cosine similarities make a distribution, the teacher's at τ_T and the student's at τ_S, and
the student minimises the cross-entropy of its distribution to the teacher's (Eq. 4–6). The
queue then receives the batch's teacher embeddings (``teacher_sees`` augmented views: nothing
is cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastssl.losses.distillation import seed_loss
from fastssl.methods.base import Encoder, MethodOutput
from fastssl.methods.distillation import Distiller, TeacherConfig
from fastssl.methods.memory import FeatureQueue
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.recipes import register
from fastssl.recipes.defaults import ONE_VIEW
from pipelines.batch import ViewBatch
from pipelines.spec import ViewConfig


@dataclass(frozen=True)
class SEEDConfig(TeacherConfig):
    # SEED's defaults (jacobswan1/SEED at f236cac, tools/opts.py L144–152) but its queue,
    # which is for ImageNet (K 65,536): on CIFAR's 50,000 images a smaller one, as the
    # memories of the other recipes here (Mini-SSL's 4,096).
    queue_size: int = 4096  # K past teacher embeddings (SEED's ImageNet runs: 65,536)
    student_temperature: float = 0.2  # τ_S (SEED's --temp)
    teacher_temperature: float = 1e-4  # τ_T (--distill-t): the teacher's target nearly one-hot on its own image
    hidden: int | None = None
    """The student head's hidden width; None: the backbone's (SEED: Linear(D, D), ReLU, Linear(D, d_T))."""


class SEED(Distiller):
    teacher_sees = "augmented views"

    def __init__(self, cfg: SEEDConfig, backbone: Backbone, student_view: ViewConfig, data: Path) -> None:
        super().__init__(cfg, student_view, data)
        self.cfg = cfg
        embedding, dim = self.teacher_embedding_dim, backbone.feature_dim
        self.student = Encoder(backbone, mlp([dim, cfg.hidden or dim, embedding]))
        self.queue = FeatureQueue(cfg.queue_size, embedding)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]
        student = self.encode(images)
        teacher = self.teacher_outputs(images, batch.indices).embedding
        loss = seed_loss(student.projection, teacher, self.queue.features, self.cfg.student_temperature,
                         self.cfg.teacher_temperature)
        return MethodOutput(loss=loss, features=student.features.detach(), embedding=student.projection.detach(),
                            enqueue={"queue": teacher})


register(
    "seed", SEED, SEEDConfig, summary="SEED: the student matches the teacher's similarities over a teacher queue",
    views=ONE_VIEW,
)
