"""Barlow Twins — "Barlow Twins: Self-Supervised Learning via Redundancy Reduction"
(Zbontar et al., ICML 2021), with solo-learn's CIFAR settings.

One encoder and projector embed both views; the cross-correlation of the two views'
batch-standardised embeddings is pulled towards the identity (Eq. 1). No teacher, no
negatives, no predictor: the off-diagonal term alone keeps the embedding from collapsing.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastssl.distributed import gather_with_full_grad
from fastssl.losses.barlow_twins import barlow_twins_loss
from fastssl.methods.base import Encoder, Method, MethodOutput
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class BarlowTwinsConfig:
    # λ of the off-diagonal term: 0.0051 in the authors' code and solo-learn (the paper's
    # text: 5·10⁻³, also lightly's default)
    lambd: float = 0.0051
    # The loss's multiplier: solo-learn's CIFAR barlow.yaml 0.1 (its method default 0.024,
    # its loss function's 0.025; the paper has none)
    scale_loss: float = 0.1
    # 512→2048 (BN, ReLU)→2048 (BN, ReLU)→2048, biases throughout (solo-learn CIFAR)
    proj_hidden: int = 2048
    proj_dim: int = 2048


class BarlowTwins(Method):
    def __init__(self, cfg: BarlowTwinsConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        dims = [backbone.feature_dim, cfg.proj_hidden, cfg.proj_hidden, cfg.proj_dim]
        self.student = Encoder(backbone, mlp(dims, hidden_bn=True))
        self.teacher = None

    def forward(self, batch: ViewBatch) -> MethodOutput:
        features, projections, _, _ = self.encode(batch.views["global"])
        z1, z2 = projections.chunk(2)
        # The correlation is over the global batch (the authors all-reduce it); on one
        # process the gathers pass straight through.
        z1, z2 = gather_with_full_grad(z1), gather_with_full_grad(z2)
        loss = self.cfg.scale_loss * barlow_twins_loss(z1, z2, self.cfg.lambd)
        return MethodOutput(loss, {}, features.detach(), z1.detach())
