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
from fastssl.models.heads import byol_heads
from fastssl.recipes import register
from fastssl.recipes.defaults import MINI_SSL_STRONG_WEAK, mini_ssl_tiny_imagenet
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class MSFConfig:
    top_k: int = 5  # neighbours of each target (Mini-SSL script; the target itself comes on top)
    momentum: float = 0.99  # target EMA m, constant (Mini-SSL CIFAR; Tiny-ImageNet 0.996)
    memory_size: int = 4096  # past target embeddings searched (Mini-SSL CIFAR; Tiny-ImageNet 16384)
    # BYOL heads (Mini-SSL MSF.py): projector 512→2048 (BN, ReLU)→128, predictor 128→2048 (BN, ReLU)→128
    proj_hidden: int = 2048  # projector hidden width
    proj_dim: int = 128  # projection (embedding) dimension
    pred_hidden: int = 2048  # predictor hidden width
    symmetric: bool = True  # both views go through the online network, loss averaged (Mini-SSL --symmetric)
    shuffle_bn: bool = True  # shuffle the target batch across BN groups (Mini-SSL batch_shuffle)


class MSF(Method):
    teacher: EMATeacher

    def __init__(self, cfg: MSFConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        heads = byol_heads(backbone.feature_dim, cfg.proj_hidden, cfg.proj_dim, cfg.pred_hidden)
        self.student = Encoder(backbone, *heads)
        self.teacher = EMATeacher(self.student, cfg.momentum, without=("predictor",))
        self.memory = FeatureQueue(cfg.memory_size, cfg.proj_dim)

    def before_step(self, progress: Progress) -> None:
        self.teacher.update(self.student)

    def shift(self, prediction: Tensor, target: Tensor, memory: Tensor) -> Tensor:
        """One direction: ``prediction`` towards ``target`` and its neighbours in ``memory``."""
        _, neighbours = nearest_neighbours(target, memory, self.cfg.top_k)
        return msf_loss(prediction, target, neighbours)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]  # strong first views, then weak second views
        student = self.encode(images)
        p1, p2 = student.predicted.chunk(2)
        t1, t2 = self.teacher.projections(images, 2, self.cfg.shuffle_bn).chunk(2)
        memory = self.memory.features  # as it was before this step, for both directions
        loss = self.shift(p1, t2, memory)
        if self.cfg.symmetric:
            loss = 0.5 * (loss + self.shift(p2, t1, memory))
        # The memory takes this step's target embeddings of the weak view, after the step.
        return MethodOutput(loss=loss, features=student.features.detach(),
                            embedding=student.projection.chunk(2)[0].detach(), enqueue={"memory": t2})


# Mini-SSL's recipe (main_pretrain_evaluation.sh with --weak, MSF.py). Sources disagree: the
# official code (ImageNet) enqueues the target before the search, so its top-5 counts the
# target (4 neighbours, Mini-SSL's 5 + 1), is one-directional, and uses a 1,024,000 memory
# with weak/weak views. Mini-SSL's MSF.py (since its fix 4a82212) scores both directions
# against the memory as it was before the step and enqueues after them, as fastssl does (the
# memory is pushed after the optimiser step). Its online and target networks see the strong
# and the weak view in separate calls, so their BN never pools the two (fastssl's per-view
# calls, the default; ``--model.joint-views`` pools them).
register(
    "msf", MSF, MSFConfig, summary="Mean Shift, weak target view · Mini-SSL",
    views=MINI_SSL_STRONG_WEAK, presets=mini_ssl_tiny_imagenet(MSFConfig),
)
