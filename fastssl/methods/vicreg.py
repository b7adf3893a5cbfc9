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
from fastssl.losses.vicreg import Reduction, vicreg_terms
from fastssl.methods.base import Encoder, Method, MethodOutput
from fastssl.models.backbone import Backbone
from fastssl.models.heads import expander
from fastssl.recipes import lightly, register
from fastssl.recipes.defaults import SOLO_LARS, SOLO_MODEL, SOLO_VICREG_VIEWS
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class VICRegConfig:
    invariance_weight: float = 25.0  # λ (paper, solo-learn CIFAR)
    variance_weight: float = 25.0  # μ
    covariance_weight: float = 1.0  # ν
    # How each view's variance and covariance terms combine: summed as the paper's Eq. 6 and
    # solo-learn; the VICReg authors' main_vicreg.py and lightly average the variance terms
    # (μ effectively halved) and sum the covariance ones
    variance_reduction: Reduction = "sum"  # v(Z) + v(Z') (Eq. 6) or their mean (the authors' code, lightly)
    covariance_reduction: Reduction = "sum"  # c(Z) + c(Z') (Eq. 6) or their mean (the VICRegL authors)
    # Expander 512→2048 (BN, ReLU)→2048 (BN, ReLU)→2048 (solo-learn CIFAR; the paper's
    # ImageNet expander is 8192-8192-8192)
    proj_hidden: int = 2048  # projector hidden width
    proj_dim: int = 2048  # projection (embedding) dimension

    @property
    def weights(self) -> tuple[float, float, float]:
        return self.invariance_weight, self.variance_weight, self.covariance_weight

    @property
    def reductions(self) -> tuple[Reduction, Reduction]:
        return self.variance_reduction, self.covariance_reduction


class VICReg(Method):
    def __init__(self, cfg: VICRegConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        self.student = Encoder(backbone, expander(backbone.feature_dim, cfg.proj_hidden, cfg.proj_dim))

    def forward(self, batch: ViewBatch) -> MethodOutput:
        student = self.encode(batch.views["global"])
        z1, z2 = student.projection.chunk(2)
        # Variance and covariance are batch statistics: over every process's embeddings.
        terms = vicreg_terms(gather_with_full_grad(z1), gather_with_full_grad(z2), reductions=self.cfg.reductions)
        metrics = {"invariance": terms.invariance.detach(), "variance": terms.variance.detach(),
                   "covariance": terms.covariance.detach()}
        return MethodOutput(loss=terms.weighted(self.cfg.weights), metrics=metrics, features=student.features.detach(),
                            embedding=z1.detach())


# solo-learn's CIFAR vicreg.yaml: its views, its LARS (warm-up from 3e-5) and its plain BN
# over each view's batch. The variance and covariance terms of the two views are summed, as
# the paper's Eq. 6 and solo-learn do (``--method.variance-reduction mean`` for the authors'
# main_vicreg.py and lightly). Project-wide instead: 200 epochs (solo-learn trains 1000:
# CIFAR-10 92.07 %, CIFAR-100 68.54 % online linear).
# ``lightly``: its VICRegModel (fastssl/recipes/lightly.py): VICRegLoss() (λ = μ = 25, ν = 1; the
# two views' variance terms averaged, ``0.5 * (variance_loss(z_a) + variance_loss(z_b))``, their
# covariance terms summed), BarlowTwinsProjectionHead(512, 2048, 2048), its LARS with 20 warm-up
# epochs (``40 if max_epochs >= 800 else 20``).
register(
    "vicreg", VICReg, VICRegConfig, summary="VICReg · solo-learn (LARS)", views=SOLO_VICREG_VIEWS,
    optim=SOLO_LARS, model=SOLO_MODEL,
    conventions={"lightly": lightly.convention(
        VICRegConfig(), SOLO_LARS, SOLO_MODEL, optim={**lightly.LARS, "warmup_epochs": 20.0}, model=lightly.MODEL,
        method={"invariance_weight": 25.0, "variance_weight": 25.0, "covariance_weight": 1.0,
                "variance_reduction": "mean", "covariance_reduction": "sum", "proj_hidden": 2048, "proj_dim": 2048})},
)
