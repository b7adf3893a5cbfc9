"""DINO — "Emerging Properties in Self-Supervised Vision Transformers" (Caron et al., 2021),
with solo-learn's CIFAR settings (ResNet-18) or the paper's AdamW (ViT).

Self-distillation with no labels: a student g_s and a teacher g_t of the same architecture
— backbone, a 3-layer GELU head ending in an L2-normalised bottleneck, then a
weight-normalised layer to K outputs — see different views of an image. The student's
softmax over the K outputs (temperature τ_s) must match the teacher's on the other views
(Eq. 1, 3); the teacher sees only the global views, the student all views (multi-crop).
The teacher is no network of its own: its weights are an exponential moving average of
the student's, λ rising from 0.9995 to 1 along a cosine, applied after each student
update (Algorithm 1). Collapse is avoided by centring and sharpening the teacher's output:
a centre C, the running mean of the teacher's outputs over the global batch (momentum
m = 0.9), is subtracted, and τ_t is low (0.04 rising to 0.07 over the first epochs).
The last layer is frozen during the first epoch, which the paper found to stabilise training.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from fastssl.config import OptimConfig
from fastssl.distributed import gather
from fastssl.losses.dino import dino_loss
from fastssl.losses.precision import at_least_fp32
from fastssl.methods.base import EMATeacher, Method, MethodOutput, Progress, PrototypeEncoder
from fastssl.models.backbone import Backbone
from fastssl.models.heads import Prototypes, mlp
from fastssl.recipes import preset, register
from fastssl.recipes.defaults import SOLO_ASYMMETRIC_PAIR, SOLO_LARS, SOLO_MODEL, multi_crop
from fastssl.train.schedule import linear_ramp
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class DINOConfig:
    student_temperature: float = 0.1  # τ_s (paper; solo-learn)
    # τ_t rises linearly, per epoch, from the first value to the second over the warm-up epochs
    # (the paper's schedule). solo-learn's CIFAR dino.yaml keeps τ_t at 0.07 throughout
    # (warmup_teacher_temperature_epochs 0, 9187ea3); the paper warms 0.04 → 0.07 over 30 of
    # its ViT runs' 100–800 ImageNet epochs (the ``-vit`` presets).
    teacher_temperature_start: float = 0.04  # τ_t at the start of its warm-up
    teacher_temperature: float = 0.07  # τ_t after the warm-up
    teacher_temperature_warmup_epochs: int = 0  # epochs of the linear τ_t warm-up (0: τ_t constant)
    momentum: float = 0.9995  # teacher EMA λ at the start, cosine to momentum_final (solo-learn CIFAR)
    momentum_final: float = 1.0  # (paper; solo-learn)
    center_momentum: float = 0.9  # m of the centre C (paper; solo-learn)
    # Head 512→2048→2048→256 with GELU, no BN, then a weight-normalised 256→K layer
    # (paper; solo-learn CIFAR with K 4096, the paper's ImageNet K is 65536).
    proj_hidden: int = 2048  # projector hidden width
    proj_dim: int = 256  # projection (embedding) dimension
    prototypes: int = 4096  # K, the number of prototypes (outputs of the last layer)
    freeze_last_layer_epochs: int = 1  # (paper; solo-learn)


class DINO(Method):
    student: PrototypeEncoder
    teacher: EMATeacher
    center: Tensor  # C, a buffer
    teacher_temperature: Tensor  # τ_t of this epoch, a buffer

    def __init__(self, cfg: DINOConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        head = mlp([backbone.feature_dim, cfg.proj_hidden, cfg.proj_hidden, cfg.proj_dim], activation=nn.GELU)
        for layer in head:  # the official head's initialisation (truncated normal, σ 0.02)
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.student = PrototypeEncoder(backbone, head, Prototypes(cfg.proj_dim, cfg.prototypes))
        self.teacher = EMATeacher(self.student, cfg.momentum)
        self.register_buffer("center", torch.zeros(cfg.prototypes))
        self.register_buffer("teacher_temperature", torch.tensor(cfg.teacher_temperature_start))
        self.epoch = 0  # of the current step, from the host's Progress: no device read decides a switch

    def before_step(self, progress: Progress) -> None:
        self.epoch = progress.epoch
        cfg, warmup = self.cfg, self.cfg.teacher_temperature_warmup_epochs
        # linspace(start, final, warm-up epochs)[epoch], then final: the official schedule
        fraction = progress.epoch / (warmup - 1) if warmup > 1 else 1.0
        self.teacher_temperature.fill_(linear_ramp(cfg.teacher_temperature_start, cfg.teacher_temperature, fraction))

    def forward(self, batch: ViewBatch) -> MethodOutput:
        n, k = batch.batch_size, self.cfg.prototypes
        global_views, student = self.encode_multi_crop(batch)  # V×N×K, the two global views first
        teacher = self.teacher(batch.views["global"]).predicted
        loss = dino_loss(
            student, teacher.view(2, n, k), self.center, self.cfg.student_temperature, self.teacher_temperature
        )
        self.update_center(teacher)
        # copies: the buffers change before the metrics are read
        metrics = {"teacher_temperature": self.teacher_temperature.clone(),
                   "ema_momentum": self.teacher.momentum.clone()}
        return MethodOutput(loss=loss, metrics=metrics, features=global_views.features.detach(),
                            embedding=global_views.projection[:n].detach())

    @torch.no_grad()
    def update_center(self, teacher_outputs: Tensor) -> None:
        """C ← m·C + (1 − m)·mean of the teacher's outputs over the global batch, once the loss
        has used C (the official DINOLoss updates it at the end of its forward). Processes
        hold equal shares of the batch: the mean of their means is the batch mean."""
        batch_mean = gather(at_least_fp32(teacher_outputs).mean(0, keepdim=True)).mean(0)
        self.center.lerp_(batch_mean, 1.0 - self.cfg.center_momentum)

    def after_backward(self) -> None:
        """No update of the last layer in the first epoch(s): its gradients are dropped, so the
        optimiser skips it (no step, no weight decay, no momentum), as the official code does."""
        if self.epoch < self.cfg.freeze_last_layer_epochs:
            self.student.prototypes.weight.grad = None

    def after_optimizer_step(self, progress: Progress) -> None:
        """Algorithm 1 after the student's update: the teacher's EMA."""
        self.teacher.follow(self.student, self.cfg.momentum, self.cfg.momentum_final, progress)

    def param_groups(self, cfg: OptimConfig) -> list[dict]:
        """With AdamW (the paper's ViT optimiser), biases and norm parameters are not decayed
        (the official ``get_params_groups``); LARS and SGD as every method."""
        if cfg.optimizer != "adamw":
            return super().param_groups(cfg)
        params = [p for p in self.student.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]


# ResNet-18: solo-learn's CIFAR dino.yaml — its asymmetric views, LARS at lr 0.3 × batch/256
# with wd 1e-6 and its default 10 warm-up epochs from 3e-5, plain BN over each view, τ_t
# constant — for fastssl's 200 epochs (solo-learn: 1000).
# The paper blurs view 1 always and view 2 with p 0.1, at 224 px. Multi-crop: solo-learn's
# CIFAR DINO has no local crops; ``--local-crops 6`` gives the paper's at CIFAR scale (the
# official ResNet-50 setting: local 0.05–0.14, global then 0.14–1, ``--views.crop-scale 0.14
# 1 --second-views.crop-scale 0.14 1``). ``cifar10-vit``, ``cifar100-vit``: ViT-Tiny with 4
# px patches (8×8 tokens at 32 px), the paper's AdamW at lr 5e-4 × batch/256, β (0.9, 0.999),
# wd 0.04 on weights only (the paper's rises to 0.4 along a cosine: fastssl keeps it
# constant), 10 warm-up epochs from 0, τ_t 0.04 → 0.07 over 30 epochs, local crops of scale
# 0.05–0.4 (the official ViT default).
register(
    "dino", DINO, DINOConfig, summary="DINO, ResNet or ViT-Tiny, multi-crop option · solo-learn / the paper (ViT)",
    views=multi_crop(*SOLO_ASYMMETRIC_PAIR),
    optim=replace(SOLO_LARS, weight_decay=1e-6), model=SOLO_MODEL,
    presets={f"{name}-vit": preset(
        name, model={"arch": "vit_tiny", "patch_size": 4}, local_views={"crop_scale": (0.05, 0.4)},
        optim={"optimizer": "adamw", "lr_per_256": 5e-4, "weight_decay": 0.04, "warmup_epochs": 10,
               "warmup_start_lr": 0.0},
        method={"teacher_temperature_warmup_epochs": 30},
    ) for name in ("cifar10", "cifar100")},
)
