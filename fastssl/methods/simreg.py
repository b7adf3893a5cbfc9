"""SimReg — "SimReg: Regression as a Simple Yet Effective Tool for Self-supervised Knowledge
Distillation" (Navaneet, Abbasi Koohpayegani, Tejankar & Pirsiavash, BMVC 2021).

The student and the frozen teacher see the same weakly augmented view of each image (the
authors' ``run.sh``: ``--single_aug --weak_weak``, a crop of scale 0.2–1 and a flip). A deep
prediction head on the student's backbone regresses the teacher's backbone feature: the
squared distance of the unit vectors, 2 − 2·cos (``fastssl.losses.distillation.simreg_loss``).
The head is the authors' four-layer MLP (``mlp_arch.py`` ``get_mlp`` with
``--n_mlp_layers 4``): D → 2D (BN, ReLU) → D → 2D (BN, ReLU) → D_T, a "projection" of two
layers and a "prediction" of two with nothing between them. The teacher may be cached
(``--method.cache-teacher``, their ``--use_cache``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from fastssl.config import OptimConfig
from fastssl.losses.distillation import simreg_loss
from fastssl.methods.base import Encoder, MethodOutput
from fastssl.methods.distillation import Distiller, TeacherConfig
from fastssl.models.backbone import Backbone
from fastssl.recipes import register
from fastssl.recipes.defaults import one_crop_and_flip
from pipelines.batch import ViewBatch
from pipelines.spec import ViewConfig


@dataclass(frozen=True)
class SimRegConfig(TeacherConfig):
    head_layers: int = 4  # 4: the deeper head of the paper (--n_mlp_layers 4); 2: D → 2D → D_T
    distill_head: bool = False  # regress the teacher's final embedding instead of its backbone feature (--teacher_fc)


def prediction_head(dim: int, teacher_dim: int, layers: int) -> nn.Sequential:
    """SimReg's ``get_mlp``: BN and ReLU after every layer but the second and the last."""
    if layers not in (2, 4):
        raise ValueError(f"--method.head-layers {layers}: SimReg's head has 2 or 4 layers")
    widths = [dim, 2 * dim] if layers == 2 else [dim, 2 * dim, dim, 2 * dim]
    modules: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        modules.append(nn.Linear(fan_in, fan_out))
        if layers == 4 and i != 1:
            modules += [nn.BatchNorm1d(fan_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*modules, nn.Linear(widths[-1], teacher_dim))


class SimReg(Distiller):
    teacher_cacheable = True

    def __init__(self, cfg: SimRegConfig, backbone: Backbone, student_view: ViewConfig, data: Path) -> None:
        super().__init__(cfg, student_view, data)
        self.cfg = cfg
        target = self.teacher_embedding_dim if cfg.distill_head else self.teacher_feature_dim
        self.student = Encoder(backbone, prediction_head(backbone.feature_dim, target, cfg.head_layers))

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]
        student = self.encode(images)
        teacher = self.teacher_outputs(images, batch.indices)
        target = teacher.embedding if self.cfg.distill_head else teacher.features
        return MethodOutput(loss=simreg_loss(student.projection, target), features=student.features.detach(),
                            embedding=student.projection.detach())


# UCDvision/simreg at 2e974e7: main.py L42–54 and run.sh — SGD lr 0.05 at batch 256, momentum
# 0.9, weight decay 1e-4, 130 epochs, cosine per epoch (tools.py, fastssl's per step); the
# weak view of dataloader.py L63–66.
register(
    "simreg", SimReg, SimRegConfig,
    summary="SimReg: the student regresses the teacher's features through a deeper prediction head",
    views=one_crop_and_flip((0.2, 1.0)),
    optim=OptimConfig(epochs=130, lr_per_256=0.05, weight_decay=1e-4, warmup_epochs=0.0),
)
