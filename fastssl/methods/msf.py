"""MSF — "Mean Shift for Self-Supervised Learning" (Koohpayegani et al., 2021), as Mini-SSL
runs it on CIFAR: symmetric loss, split-BN, shuffled targets, a weak target view.

BYOL with neighbours: an online network (backbone, projector, predictor) regresses its
prediction of one view onto a target network's embedding of the other view, and also onto
that target's k nearest neighbours in a memory of past target embeddings — it "shifts" each
embedding towards the mean of its neighbourhood. The target network follows the online one
by EMA (θ_t ← m·θ_t + (1−m)·θ_o, before each forward pass, predictor excluded). Mini-SSL
gives the online network the strong view and the target the weak one (RRC + flip only),
then swaps them for the symmetric term; the memory receives the target embeddings of the
weak (second) view after the optimiser step, so both directions search the memory as it
was before the step.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from fastssl.losses.neighbours import msf_loss, nearest_neighbours
from fastssl.methods.base import EMATeacher, Encoder, Method, MethodOutput, Progress
from fastssl.methods.memory import FeatureQueue
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class MSFConfig:
    top_k: int = 5  # neighbours of each target (Mini-SSL script; the target itself comes on top)
    momentum: float = 0.99  # target EMA m, constant (Mini-SSL CIFAR; Tiny-ImageNet 0.996)
    memory_size: int = 4096  # past target embeddings searched (Mini-SSL CIFAR; Tiny-ImageNet 16384)
    # BYOL heads (Mini-SSL MSF.py): projector 512→2048 (BN, ReLU)→128, predictor 128→2048 (BN, ReLU)→128
    proj_hidden: int = 2048
    proj_dim: int = 128
    pred_hidden: int = 2048
    symmetric: bool = True  # both views go through the online network, loss averaged (Mini-SSL --symmetric)
    shuffle_bn: bool = True  # shuffle the target batch across BN groups (Mini-SSL batch_shuffle)


class MSF(Method):
    teacher: EMATeacher

    def __init__(self, cfg: MSFConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        projector = mlp([backbone.feature_dim, cfg.proj_hidden, cfg.proj_dim], hidden_bn=True)
        predictor = mlp([cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim], hidden_bn=True)
        self.student = Encoder(backbone, projector, predictor)
        self.teacher = EMATeacher(self.student, cfg.momentum, without=("predictor",))
        self.memory = FeatureQueue(cfg.memory_size, cfg.proj_dim)
        self._new_targets: Tensor | None = None

    def before_step(self, progress: Progress) -> None:
        self.teacher.update(self.student)

    def shift(self, prediction: Tensor, target: Tensor, memory: Tensor) -> Tensor:
        """One direction: ``prediction`` towards ``target`` and its neighbours in ``memory``."""
        _, neighbours = nearest_neighbours(target, memory, self.cfg.top_k)
        return msf_loss(prediction, target, neighbours)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]  # strong first views, then weak second views
        features, projections, predictions, _ = self.encode(images)
        assert predictions is not None  # the encoder has a predictor
        p1, p2 = predictions.chunk(2)
        t1, t2 = self.teacher.projections(images, 2, self.cfg.shuffle_bn).chunk(2)
        memory = self.memory.features  # as it was before this step, for both directions
        loss = self.shift(p1, t2, memory)
        if self.cfg.symmetric:
            loss = 0.5 * (loss + self.shift(p2, t1, memory))
        self._new_targets = t2
        return MethodOutput(loss, {}, features.detach(), projections.chunk(2)[0].detach())

    def after_optimizer_step(self, progress: Progress) -> None:
        """Push this step's target embeddings of the weak view, from every process."""
        assert self._new_targets is not None  # set by this step's forward
        self.memory.push(self._new_targets)
        self._new_targets = None
