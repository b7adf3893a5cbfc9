"""BYOL — "Bootstrap Your Own Latent" (Grill et al., 2020).

An online network (backbone, projector, predictor q_θ) predicts the projection that a
target network, its exponential moving average without the predictor, makes of the other
view of the image. No negatives: the predictor and the slowly moving target keep the
representation from collapsing. The loss (Eq. 2) is the squared distance of the unit
vectors, 2 − 2·cos(q_θ(z_θ), z′_ξ); both views take each role and the two directions are
averaged (Mini-SSL's ``--symmetric``; the paper adds them, §3.1 — an lr factor of 2).

The target's momentum τ is Mini-SSL's constant 0.99 by default; ``momentum_final`` 1 gives
the paper's rise along a half cosine (§3.3: τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2). The
EMA is applied before each forward pass (Mini-SSL, as MoCo), with the momentum of that
step. The target's batch is shuffled across BN groups and put back (Mini-SSL's BYOL.py
``batch_shuffle``, as MoCo's key encoder).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastssl.config import ModelConfig, OptimConfig
from fastssl.losses.cosine import normalized_l2
from fastssl.methods.base import EMATeacher, Encoder, Method, MethodOutput, Progress
from fastssl.models.backbone import Backbone
from fastssl.models.heads import byol_heads
from fastssl.recipes import lightly, preset, register
from fastssl.recipes.defaults import BYOL_PAPER_PAIR, MINI_SSL_PAIR, mini_ssl_tiny_imagenet
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class BYOLConfig:
    momentum: float = 0.99  # τ_base (Mini-SSL CIFAR, solo-learn CIFAR; the paper's ImageNet 0.996)
    # τ at the end of training: None keeps τ_base throughout (Mini-SSL's BYOL run, --momentum
    # 0.99; its Tiny-ImageNet run 0.996); 1 is the paper's and solo-learn's cosine schedule
    momentum_final: float | None = None
    shuffle_bn: bool = True  # shuffle the target's batch across BN groups (Mini-SSL BYOL.py)
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
        final = self.cfg.momentum if self.cfg.momentum_final is None else self.cfg.momentum_final
        self.teacher.follow(self.student, self.cfg.momentum, final, progress)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]
        student = self.encode(images)
        p1, p2 = student.predicted.chunk(2)
        z1, z2 = self.teacher.projections(images, 2, self.cfg.shuffle_bn).chunk(2)
        loss = 0.5 * (normalized_l2(p1, z2) + normalized_l2(p2, z1))
        metrics = {"ema_momentum": self.teacher.momentum.clone()}  # a copy: the buffer changes next step
        return MethodOutput(loss=loss, metrics=metrics, features=student.features.detach(),
                            embedding=student.projection.chunk(2)[0].detach())


# Mini-SSL's BYOL run (main_pretrain_evaluation.sh with --momentum 0.99; BYOL.py at 4a82212):
# its backbone, SGD and schedule, its views (the same augmentation for both, held as a
# second view so a preset can change it), its constant τ and its shuffled target.
# ``cifar10-paper``: the paper's schedule (τ 0.99 → 1) and asymmetric pair (view 2 blurred
# with p 0.1 and solarised with p 0.2; view 1 keeps Mini-SSL's blur p 0.5 where the paper
# blurs always: ``--views.blur-p 1``). Other sources: solo-learn's CIFAR byol.yaml takes its
# asymmetric.yaml (no blur on either view) and trains 1000 epochs with LARS 1.0, wd 1e-5.
# ``lightly``: its BYOLModel (fastssl/recipes/lightly.py): constant τ 0.99, no shuffled target,
# BYOLProjectionHead(512, 4096, 256) and BYOLPredictionHead(256, 4096, 256), plain BN, and its SGD
# (0.06, wd 5e-4) on NegativeCosineSimilarity, −cos, where fastssl's loss is 2 − 2·cos: twice the
# gradient, so lr 0.03 with wd 1e-3 takes exactly lightly's steps.
register(
    "byol", BYOL, BYOLConfig, summary="BYOL, constant EMA 0.99, shuffled target · Mini-SSL",
    views=MINI_SSL_PAIR,
    presets={**mini_ssl_tiny_imagenet(BYOLConfig),
             "cifar10-paper": preset("cifar10", second_views=BYOL_PAPER_PAIR.defaults["second_views"],
                                     method={"momentum_final": 1.0})},
    conventions={"lightly": lightly.convention(
        BYOLConfig(), OptimConfig(), ModelConfig(), model=lightly.MODEL,
        optim={**lightly.SGD, "lr_per_256": 0.03, "weight_decay": 1e-3},
        method={"momentum": 0.99, "momentum_final": None, "shuffle_bn": False, "proj_hidden": 4096, "proj_dim": 256,
                "pred_hidden": 4096})},
)
