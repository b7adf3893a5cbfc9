"""MoCo v3 — "An Empirical Study of Training Self-Supervised Vision Transformers"
(Chen, Xie & He, 2021).

MoCo without a queue: the keys are the momentum encoder's projections of the other view
of every image in the (global) batch, and the queries are the online predictor's outputs
(BYOL's asymmetry). InfoNCE with in-batch negatives (Eq. 1), scaled by 2τ (Algorithm 1
and the authors' code: it cancels the 1/τ of the logits in the gradient), and symmetrised
by summing the two directions (Algorithm 1: ``loss = ctr(q1, k2) + ctr(q2, k1)``):

    L = 2τ·[CE(q₁·k₂ᵀ/τ) + CE(q₂·k₁ᵀ/τ)],   positives on the diagonal.

The keys carry no gradient, so they are gathered from every process without one; a
process's positives start at rank·n among them. The momentum encoder (backbone and
projector, no predictor) follows the online one with m rising from 0.99 to 1 along a half
cosine (the authors' ``--moco-m-cos``), applied before each forward pass as in their code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from fastssl.distributed import gather, rank
from fastssl.losses.infonce import Backend, batch_info_nce
from fastssl.methods.base import EMATeacher, Encoder, Method, MethodOutput, Progress
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.recipes import preset, register
from fastssl.recipes.defaults import DATA_SETS, SOLO_ASYMMETRIC, SOLO_LARS, SOLO_MODEL
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class MoCoV3Config:
    temperature: float = 0.2  # τ (solo-learn CIFAR; the paper's ViTs 0.2, its ResNet-50 1.0)
    momentum: float = 0.99  # m at the start (the paper and solo-learn CIFAR)
    momentum_final: float = 1.0  # m at the end of the half cosine (the paper, solo-learn)
    # Heads as the authors' _build_mlp (no biases, BN and ReLU on hidden layers): projector
    # backbone→4096→256 ending in BN without affine, predictor 256→4096→256. ResNet: a
    # 2-layer projector and a predictor without output BN; ViT: 3 layers and output BN.
    proj_layers: int = 2  # projector layers (ResNet 2, ViT 3)
    proj_hidden: int = 4096  # projector hidden width
    proj_dim: int = 256  # projection (embedding) dimension
    pred_hidden: int = 4096  # predictor hidden width
    pred_last_bn: bool = False  # BN without affine after the predictor (ViT)
    # InfoNCE log-sum-exp: auto (fused Triton kernel on CUDA, else plain) | plain | chunked | fused
    loss_backend: Backend = "auto"
    """InfoNCE log-sum-exp: auto (fused Triton kernel on CUDA, else plain) | plain | chunked | fused."""


def _heads(cfg: MoCoV3Config, feature_dim: int) -> tuple[torch.nn.Sequential, torch.nn.Sequential]:
    projector = mlp(
        [feature_dim] + [cfg.proj_hidden] * (cfg.proj_layers - 1) + [cfg.proj_dim],
        hidden_bn=True, last_bn=True, bias=False, last_bn_affine=False,
    )
    predictor = mlp(
        [cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim],
        hidden_bn=True, last_bn=cfg.pred_last_bn, bias=False, last_bn_affine=False,
    )
    return projector, predictor


class MoCoV3(Method):
    teacher: EMATeacher

    def __init__(self, cfg: MoCoV3Config, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        self.student = Encoder(backbone, *_heads(cfg, backbone.feature_dim))
        self.teacher = EMATeacher(self.student, cfg.momentum, without=("predictor",))

    def before_step(self, progress: Progress) -> None:
        self.teacher.follow(self.student, self.cfg.momentum, self.cfg.momentum_final, progress)

    def contrastive(self, queries: Tensor, keys: Tensor) -> Tensor:
        """2τ·InfoNCE of this process's ``queries`` against every process's ``keys``."""
        tau = self.cfg.temperature
        offset = rank() * len(queries)
        return 2 * tau * batch_info_nce(queries, gather(keys), tau, offset, self.cfg.loss_backend)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]
        student = self.encode(images)
        q1, q2 = student.predicted.chunk(2)  # the predictor gives the queries
        k1, k2 = self.teacher(images).projection.chunk(2)
        loss = self.contrastive(q1, k2) + self.contrastive(q2, k1)
        metrics = {"ema_momentum": self.teacher.momentum.clone()}  # a copy: the buffer changes next step
        return MethodOutput(loss=loss, metrics=metrics, features=student.features.detach(),
                            embedding=student.projection.chunk(2)[0].detach())


# ResNet-18: solo-learn's CIFAR mocov3.yaml — its asymmetric.yaml views (crops 0.08–1, jitter
# saturation 0.2, no blur, view 2 solarised with p 0.2), its LARS at lr 0.3 × batch/256 and wd
# 1e-6, 10 warm-up epochs from 3e-5, plain BN over each view — for fastssl's 200 epochs
# (solo-learn: 1000). The paper's ResNet-50 follows BYOL's augmentation (blur 1/0.1, crops
# 0.2–1 as its --crop-min): ``--second-views.blur-p 0.1 --views.blur-p 1`` and the crop scales.
# ``<data set>-vit``: the paper's CONFIG.md for ViT-S scaled to ViT-Tiny (patch 4 at 32 px):
# AdamW lr 1.5e-4 × batch/256, wd 0.1, 40 warm-up epochs from 0, crops of scale 0.08–1 (its
# ViT runs keep the default --crop-min), a 3-layer projector and a predictor ending in BN
# (MoCo_ViT). Not reproduced: the paper's frozen random patch projection (--stop-grad-conv1).
register(
    "mocov3", MoCoV3, MoCoV3Config,
    summary="MoCo v3, ResNet or ViT (--preset cifar10-vit) · solo-learn / the paper (ViT)",
    views=SOLO_ASYMMETRIC, optim=replace(SOLO_LARS, weight_decay=1e-6), model=SOLO_MODEL,
    presets={f"{name}-vit": preset(
        name, every_view={"crop_scale": (0.08, 1.0)}, model={"arch": "vit_tiny"},
        optim={"optimizer": "adamw", "lr_per_256": 1.5e-4, "weight_decay": 0.1, "warmup_epochs": 40,
               "warmup_start_lr": 0.0},
        method={"proj_layers": 3, "pred_last_bn": True},
        eval_size=None,  # a ViT's position embedding fits its views' size, so it is tested at it
    ) for name in DATA_SETS},
)
