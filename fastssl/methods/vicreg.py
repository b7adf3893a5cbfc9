"""VICReg — "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning" (Bardes, Ponce & LeCun, ICLR 2022), with solo-learn's CIFAR settings.

One encoder and an expander (projector) embed both views. The embeddings of an image's two
views are pulled together (invariance) while every embedding dimension keeps a standard
deviation of at least 1 over the batch (variance) and the dimensions stay decorrelated
(covariance) — Eq. 6 with λ = μ = 25, ν = 1. No teacher, no negatives, no predictor.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastssl.distributed import gather_with_full_grad
from fastssl.losses.vicreg import vicreg_terms
from fastssl.methods.base import Encoder, Method, MethodOutput
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class VICRegConfig:
    invariance_weight: float = 25.0  # λ (paper, solo-learn CIFAR)
    variance_weight: float = 25.0  # μ
    covariance_weight: float = 1.0  # ν
    # Expander 512→2048 (BN, ReLU)→2048 (BN, ReLU)→2048 (solo-learn CIFAR; the paper's
    # ImageNet expander is 8192-8192-8192)
    proj_hidden: int = 2048
    proj_dim: int = 2048

    @property
    def weights(self) -> tuple[float, float, float]:
        return self.invariance_weight, self.variance_weight, self.covariance_weight


class VICReg(Method):
    def __init__(self, cfg: VICRegConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        dims = [backbone.feature_dim, cfg.proj_hidden, cfg.proj_hidden, cfg.proj_dim]
        self.student = Encoder(backbone, mlp(dims, hidden_bn=True))
        self.teacher = None

    def forward(self, batch: ViewBatch) -> MethodOutput:
        features, projections, _, _ = self.encode(batch.views["global"])
        z1, z2 = projections.chunk(2)
        # Variance and covariance are batch statistics: over every process's embeddings.
        terms = vicreg_terms(gather_with_full_grad(z1), gather_with_full_grad(z2))
        metrics = {"invariance": terms.invariance.detach(), "variance": terms.variance.detach(),
                   "covariance": terms.covariance.detach()}
        return MethodOutput(terms.weighted(self.cfg.weights), metrics, features.detach(), z1.detach())
