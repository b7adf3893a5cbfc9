"""SNCLR — "Soft Neighbors are Positive Supporters in Contrastive Visual Representation
Learning" (Ge et al., 2023), as Mini-SSL runs it on CIFAR: symmetric loss, split-BN,
shuffled targets, top-5 neighbours.

A momentum target network embeds one view; its k nearest neighbours in a memory of past
target embeddings join it as candidates. The online prediction of the other view is
contrasted against every image's candidates, with a soft label: 1 on its own target, and on
its own neighbours their "positiveness", a softmax of each neighbour's cosine to the online
projection (the cross-attention). The target network follows the online one by EMA
(before each forward pass, predictor excluded). Symmetric: the directions averaged; the
memory receives the target embeddings of the second view after the optimiser step, so
both directions search it as it was before the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fastssl.distributed import gather, rank
from fastssl.losses.neighbours import nearest_neighbours, snclr_loss
from fastssl.losses.precision import at_least_fp32
from fastssl.methods.base import EMATeacher, Encoder, Method, MethodOutput, Progress
from fastssl.methods.memory import FeatureQueue
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.recipes import register
from fastssl.recipes.defaults import mini_ssl_tiny_imagenet
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class SNCLRConfig:
    temperature: float = 0.2  # τ (Mini-SSL script; the official ImageNet script also 0.2)
    top_k: int = 5  # soft neighbours per target (Mini-SSL script; the official ImageNet: 30)
    momentum: float = 0.99  # target EMA m, constant (Mini-SSL CIFAR; Tiny-ImageNet 0.996)
    memory_size: int = 4096  # past target embeddings (Mini-SSL CIFAR; Tiny-ImageNet 16384)
    # Heads of Mini-SSL's SNCLR.py (see ``head``): projector 512→2048→2048→128, predictor 128→2048→128
    proj_hidden: int = 2048  # projector hidden width
    proj_dim: int = 128  # projection (embedding) dimension
    pred_hidden: int = 2048  # predictor hidden width
    symmetric: bool = True  # both views go through the online network, loss averaged (Mini-SSL --symmetric)
    shuffle_bn: bool = True  # shuffle the target batch across BN groups (Mini-SSL batch_shuffle)


def head(dims: list[int]) -> torch.nn.Module:
    """Mini-SSL's ``_build_mlp`` (MoCo v3's heads): no biases, BN and ReLU after the hidden
    layers, BN without affine parameters after the last."""
    return mlp(dims, hidden_bn=True, last_bn=True, bias=False, last_bn_affine=False)


class SNCLR(Method):
    teacher: EMATeacher

    def __init__(self, cfg: SNCLRConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        projector = head([backbone.feature_dim, cfg.proj_hidden, cfg.proj_hidden, cfg.proj_dim])
        predictor = head([cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim])
        self.student = Encoder(backbone, projector, predictor)
        self.teacher = EMATeacher(self.student, cfg.momentum, without=("predictor",))
        self.memory = FeatureQueue(cfg.memory_size, cfg.proj_dim)

    def before_step(self, progress: Progress) -> None:
        self.teacher.update(self.student)

    def contrast(self, prediction: Tensor, projection: Tensor, target: Tensor, memory: Tensor) -> Tensor:
        """One direction: the ``prediction`` and ``projection`` of one view against the
        ``target`` of the other and its neighbours, every process's images as candidates."""
        _, neighbours = nearest_neighbours(target, memory, self.cfg.top_k)
        candidates = gather(torch.cat([at_least_fp32(target[:, None]), neighbours], 1))
        return snclr_loss(prediction, projection, candidates, self.cfg.temperature, rank() * len(prediction))

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]
        student = self.encode(images)
        z1, z2 = student.projection.chunk(2)
        p1, p2 = student.predicted.chunk(2)
        t1, t2 = self.teacher.projections(images, 2, self.cfg.shuffle_bn).chunk(2)
        memory = self.memory.features  # as it was before this step, for both directions
        loss = self.contrast(p1, z1, t2, memory)
        if self.cfg.symmetric:
            loss = 0.5 * (loss + self.contrast(p2, z2, t1, memory))
        # The memory takes this step's target embeddings of the second view, after the step.
        return MethodOutput(loss=loss, features=student.features.detach(), embedding=z1.detach(),
                            enqueue={"memory": t2})


# Mini-SSL's recipe (main_pretrain_evaluation.sh, SNCLR.py; both views its strong
# augmentation: its SNCLR-specific aug1/aug2 are defined but unused by main_pretrain.py).
# Sources disagree: the official code (ViT-S, ImageNet) uses a 128,000 memory, top-30, an
# EMA on a cosine schedule, AdamW, and sums the two directions scaled by 2τ; Mini-SSL
# averages them unscaled, as fastssl does.
register("snclr", SNCLR, SNCLRConfig, summary="SNCLR, soft neighbours · Mini-SSL",
         presets=mini_ssl_tiny_imagenet(SNCLRConfig))
