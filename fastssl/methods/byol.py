"""BYOL — "Bootstrap Your Own Latent" (Grill et al., 2020).

An online network (backbone, projector, predictor q_θ) predicts the projection that a
target network, its exponential moving average without the predictor, makes of the other
view of the image. No negatives: the predictor and the slowly moving target keep the
representation from collapsing. The loss (Eq. 2) is the squared distance of the unit
vectors, 2 − 2·cos(q_θ(z_θ), z′_ξ); both views take each role and the two directions are
averaged (Mini-SSL's ``--symmetric``; the paper adds them, §3.1 — an lr factor of 2).

The target's momentum τ rises from τ_base to 1 along a half cosine over training
(§3.3: τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2). The EMA is applied before each forward
pass (Mini-SSL, as MoCo), with the momentum of that step.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastssl.losses.cosine import normalized_l2
from fastssl.methods.base import EMATeacher, Encoder, Method, MethodOutput, Progress
from fastssl.models.backbone import Backbone
from fastssl.models.heads import byol_heads
from fastssl.recipes import register
from fastssl.recipes.defaults import BYOL_PAPER_PAIR, mini_ssl_tiny_imagenet
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class BYOLConfig:
    momentum: float = 0.99  # τ_base (solo-learn CIFAR, Mini-SSL CIFAR; the paper's ImageNet 0.996)
    # τ at the end of training: 1 as the paper and solo-learn; 0.99 keeps it constant (Mini-SSL)
    momentum_final: float = 1.0  # τ at the end of training (1: the paper's schedule; 0.99: Mini-SSL's constant)
    # Projector 512→2048 (BN, ReLU)→128 and predictor 128→2048 (BN, ReLU)→128 (Mini-SSL
    # BYOL.py; the paper: 4096 hidden, 256 out). The hidden layers keep their bias before
    # BN, which BN cancels: the same function as Mini-SSL's bias-free ones.
    proj_hidden: int = 2048  # projector hidden width
    proj_dim: int = 128  # projection (embedding) dimension
    pred_hidden: int = 2048  # predictor hidden width


class BYOL(Method):
    teacher: EMATeacher

    def __init__(self, cfg: BYOLConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        heads = byol_heads(backbone.feature_dim, cfg.proj_hidden, cfg.proj_dim, cfg.pred_hidden)
        self.student = Encoder(backbone, *heads)
        self.teacher = EMATeacher(self.student, cfg.momentum, without=("predictor",))

    def before_step(self, progress: Progress) -> None:
        self.teacher.follow(self.student, self.cfg.momentum, self.cfg.momentum_final, progress)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]
        student = self.encode(images)
        p1, p2 = student.predicted.chunk(2)
        z1, z2 = self.teacher(images).projection.chunk(2)
        loss = 0.5 * (normalized_l2(p1, z2) + normalized_l2(p2, z1))
        metrics = {"ema_momentum": self.teacher.momentum.clone()}  # a copy: the buffer changes next step
        return MethodOutput(loss=loss, metrics=metrics, features=student.features.detach(),
                            embedding=student.projection.chunk(2)[0].detach())


# Mini-SSL's BYOL run (main_pretrain_evaluation.sh): its backbone, SGD and schedule; the
# paper's momentum schedule and asymmetric views. Sources disagree on the views: the paper's
# jitter has saturation 0.2 and its crops scale 0.08–1, and it blurs view 1 always
# (``--views.blur-p 1``); solo-learn's CIFAR asymmetric.yaml blurs neither view
# (``--views.blur-p 0 --second-views.blur-p 0``); Mini-SSL's own BYOL run uses its symmetric
# views (``--second-views.blur-p 0.5 --second-views.solarize-p 0``), keeps τ at 0.99
# (``--method.momentum-final 0.99``) and shuffles the target's batch across BN groups, which
# fastssl does not (without negatives BN cannot leak a shortcut to a contrastive target).
# solo-learn trains 1000 epochs with LARS 1.0, wd 1e-5.
register(
    "byol", BYOL, BYOLConfig, summary="BYOL, cosine EMA to 1, asymmetric views · Mini-SSL (+ the paper's schedule)",
    views=BYOL_PAPER_PAIR, presets=mini_ssl_tiny_imagenet(BYOLConfig),
)
