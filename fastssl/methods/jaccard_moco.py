"""MoCo with a Jaccard similarity — seed 004: Jiang et al., "Refining self-supervised
learning in imaging: beyond linear metric" (ICIP 2022, arXiv 2202.12921), built on MoCo
(He et al., 2020) as the first author's public code runs it (bjiang99/Ph.D.-s-Projects,
SSL/SSL_MoCo_Jaccard @fe50c32).

MoCo with two projection heads instead of one: g_p embeds for similarity, g_n for
dissimilarity, and the query–key score is their Jaccard index J = S / (S + D) rather than
a cosine (see ``fastssl/losses/jaccard.py``). A key encoder follows the query encoder by EMA
(applied before each forward pass); the query encoder sees the first view, the key encoder
the second (one direction, as the author's code); the queue of negatives receives the keys
of both heads after the optimiser step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fastssl.losses.jaccard import jaccard_info_nce
from fastssl.methods.base import EMATeacher, Encoder, Method, MethodOutput, Progress
from fastssl.methods.memory import FeatureQueue
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class JaccardMoCoConfig:
    # τ on J and on the heads' cosines: 0.1 as in the author's result and checkpoint file
    # names (the seed says 0.5, the author's script defaults to 0.06: see the recipe)
    temperature: float = 0.1
    # Weights of the InfoNCE terms on J, on g_p's cosine, on g_n's cosine (the author's code)
    loss_weights: tuple[float, float, float] = (0.8, 0.1, 0.1)
    momentum: float = 0.999  # key-encoder EMA m, constant (seed; the MoCo paper)
    queue_size: int = 4096  # negatives (seed)
    # Each head d→512 (BN, ReLU)→128 (the author's model_jaccard.py; seed: feature_dim 128)
    proj_hidden: int = 512
    proj_dim: int = 128
    shuffle_bn: bool = True  # shuffle the key batch across BN groups (He et al., §3.3; the author's code)


class JaccardHeads(nn.Module):
    """The similarity head g_p and the dissimilarity head g_n, outputs side by side."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        # A bias before BN is cancelled by it: the author's first layers have none, to the same effect.
        self.similarity = mlp([in_dim, hidden, out_dim], hidden_bn=True)
        self.dissimilarity = mlp([in_dim, hidden, out_dim], hidden_bn=True)

    def forward(self, features: Tensor) -> Tensor:
        return torch.cat([self.similarity(features), self.dissimilarity(features)], dim=1)


class JaccardMoCo(Method):
    teacher: EMATeacher

    def __init__(self, cfg: JaccardMoCoConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        self.student = Encoder(backbone, JaccardHeads(backbone.feature_dim, cfg.proj_hidden, cfg.proj_dim))
        self.teacher = EMATeacher(self.student, cfg.momentum)
        # Both heads' keys in one row; the loss normalises each half on its own.
        self.queue = FeatureQueue(cfg.queue_size, 2 * cfg.proj_dim)
        self._new_keys: Tensor | None = None

    def before_step(self, progress: Progress) -> None:
        self.teacher.update(self.student)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        first, second = batch.views["global"].chunk(2)
        features, queries, _, _ = self.encode(first)
        keys = self.teacher.projections(second, 1, self.cfg.shuffle_bn)
        loss = jaccard_info_nce(queries, keys, self.queue.features, self.cfg.temperature, self.cfg.loss_weights)
        self._new_keys = keys
        return MethodOutput(loss, {}, features.detach(), queries.detach())

    def after_optimizer_step(self, progress: Progress) -> None:
        """Enqueue this step's keys from every process, oldest out."""
        assert self._new_keys is not None  # set by this step's forward
        self.queue.push(self._new_keys)
        self._new_keys = None
