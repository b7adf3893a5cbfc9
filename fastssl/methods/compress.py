"""CompRess — "CompRess: Self-Supervised Learning by Compressing Representations" (Abbasi
Koohpayegani, Tejankar & Pirsiavash, NeurIPS 2020).

The student and the frozen teacher see the same augmented view of each image (a crop and a
flip, no colour: the authors' ``train_student.py``). Each network relates its feature to a
memory of K anchor images: p^T = softmax(t·a^T/τ) and p^S = softmax(s·a^S/τ), and the student
minimises KL(p^T ‖ p^S) (``fastssl.losses.distillation``). Two variants:

* ``2q`` (the paper's main model, ``train_student.py``): a memory per network, of the same
  images — the teacher's features in one, in the other the features a momentum copy of the
  student (EMA 0.999) makes of the same views; the student's feature is its backbone's.
* ``1q`` (``train_student_one_queue.py``): one memory of teacher features serves both; the
  student's backbone feature passes a linear layer to the teacher's width.

Both distil the teacher's backbone features (the authors drop the teacher's head,
``model_t.fc = nn.Sequential()``), and the teacher may be cached (``--method.cache-teacher``:
its features of the un-augmented images computed once, as their ``--cache_teacher``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import nn

from fastssl.config import OptimConfig
from fastssl.losses.distillation import compress_1q_loss, compress_2q_loss
from fastssl.methods.base import EMATeacher, Encoder, MethodOutput, Progress
from fastssl.methods.distillation import Distiller, TeacherConfig
from fastssl.methods.memory import FeatureQueue
from fastssl.models.backbone import Backbone
from fastssl.recipes import register
from fastssl.recipes.defaults import one_crop_and_flip
from pipelines.batch import ViewBatch
from pipelines.spec import ViewConfig


@dataclass(frozen=True)
class CompRessConfig(TeacherConfig):
    # UMBCvision/CompRess at c5e57ed, train_student.py L51–62, but the memory, sized for
    # ImageNet (128,000): on CIFAR's 50,000 images the other recipes' 4,096.
    variant: Literal["1q", "2q"] = "2q"  # a teacher memory for both (1q) or one per network (2q, the paper's)
    memory_size: int = 4096  # K anchors (CompRess's ImageNet runs: 128,000)
    temperature: float = 0.04  # τ, both networks (--compress_t)
    momentum: float = 0.999  # 2q: the EMA of the student that fills its memory (--alpha)


class CompRess(Distiller):
    teacher_cacheable = True
    momentum_student: EMATeacher

    def __init__(self, cfg: CompRessConfig, backbone: Backbone, student_view: ViewConfig, data: Path) -> None:
        super().__init__(cfg, student_view, data)
        self.cfg = cfg
        teacher_dim = self.teacher_feature_dim
        if cfg.variant == "1q":
            self.student = Encoder(backbone, nn.Linear(backbone.feature_dim, teacher_dim))
        else:
            self.student = Encoder(backbone, nn.Identity())
            self.momentum_student = EMATeacher(self.student, cfg.momentum)
            self.student_memory = FeatureQueue(cfg.memory_size, backbone.feature_dim)
        self.teacher_memory = FeatureQueue(cfg.memory_size, teacher_dim)

    def before_step(self, progress: Progress) -> None:
        if self.cfg.variant == "2q":
            self.momentum_student.update(self.student)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]
        student = self.encode(images)
        teacher = self.teacher_outputs(images, batch.indices).features
        tau, enqueue = self.cfg.temperature, {"teacher_memory": teacher}
        if self.cfg.variant == "1q":
            loss = compress_1q_loss(student.projection, teacher, self.teacher_memory.features, tau)
        else:
            loss = compress_2q_loss(student.projection, teacher, self.student_memory.features,
                                    self.teacher_memory.features, tau)
            # The momentum student's features of the same views, rows aligned with the teacher's.
            enqueue["student_memory"] = self.momentum_student(images).projection
        return MethodOutput(loss=loss, features=student.features.detach(), embedding=student.projection.detach(),
                            enqueue=enqueue)

    def compiled_networks(self) -> list[nn.Module]:
        return [*super().compiled_networks(), *([self.momentum_student.network] if self.cfg.variant == "2q" else [])]


# train_student.py: a crop (RandomResizedCrop's default scale 0.08–1) and a flip, no colour;
# SGD lr 0.01 at batch 256, momentum 0.9, weight decay 1e-4, 130 epochs with the lr × 0.2 at
# 90 and 120 (L30–39; not expressible by fastssl's schedules: cosine from the same peak).
register(
    "compress", CompRess, CompRessConfig,
    summary="CompRess: the student matches the teacher's similarities to a memory (1q or 2q)",
    views=one_crop_and_flip((0.08, 1.0)),
    optim=OptimConfig(epochs=130, lr_per_256=0.01, weight_decay=1e-4, warmup_epochs=0.0),
)
