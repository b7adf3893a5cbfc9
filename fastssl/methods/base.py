"""What every method shares: its output, the training progress it is told, the hooks the
loop calls, and the EMA teacher slot. Methods stay small; nothing here decides device,
precision or process count."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pipelines.batch import ViewBatch


@dataclass
class MethodOutput:
    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)  # device scalars, read at log time
    features: Tensor | None = None  # detached backbone features of the views (online probe)


@dataclass(frozen=True)
class Progress:
    epoch: int
    step: int  # within the epoch
    steps_per_epoch: int
    epochs: int

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step

    @property
    def fraction(self) -> float:
        """Share of training done, in [0, 1)."""
        return self.global_step / (self.epochs * self.steps_per_epoch)


class Encoder(nn.Module):
    """Backbone plus projection head: the trainable network the loop wraps in DDP."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone(images)
        return features, self.projector(features)


class EMATeacher(nn.Module):
    """A frozen copy of a network, moved towards it by an exponential moving average.

    It lives outside the optimiser (no parameter requires grad) and outside DDP (only the
    student is wrapped). It runs without autograd but keeps its BN layers in training
    mode, as MoCo's key encoder does; its BN buffers track its own batches.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.network = copy.deepcopy(student)
        self.network.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """θ_teacher ← m·θ_teacher + (1 − m)·θ_student, parameters only."""
        teacher_params = list(self.network.parameters())
        student_params = [p.detach() for p in student.parameters()]
        torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.network(images)


class Method(nn.Module):
    """Base of the methods: a student ``Encoder`` (wrapped by the loop for DDP), an optional
    teacher, and the hooks. Subclasses implement ``forward`` and the hooks they need."""

    student: Encoder
    teacher: EMATeacher | None  # every method sets it, None when it has no teacher

    def bind_student(self, wrapped: nn.Module) -> None:
        """Call the student through ``wrapped`` (a DDP wrapper), keeping state-dict keys."""
        self.__dict__["_student_call"] = wrapped

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.__dict__.get("_student_call", self.student)(images)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        raise NotImplementedError

    def before_step(self, progress: Progress) -> None:
        """Schedules and updates that must precede the forward pass."""

    def after_backward(self) -> None:
        """Gradient edits (freezes by zeroing) before the optimiser step."""

    def after_optimizer_step(self, progress: Progress) -> None:
        """EMA and queue updates that follow the optimiser step."""

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser groups; the default decays every student parameter (Mini-SSL)."""
        return [{"params": list(self.student.parameters()), "weight_decay": weight_decay}]

    @property
    def backbone(self) -> nn.Module:
        return self.student.backbone

    def monitored_backbones(self) -> dict[str, nn.Module]:
        """The networks the kNN monitor evaluates: the student's and any teacher's."""
        nets = {"student": self.student.backbone}
        if self.teacher is not None:
            nets["teacher"] = self.teacher.network.backbone
        return nets
