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
from fastssl.models.heads import expander
from fastssl.recipes import lightly, register
from fastssl.recipes.defaults import SOLO_ASYMMETRIC, SOLO_LARS, SOLO_MODEL
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class BarlowTwinsConfig:
    # λ of the off-diagonal term: 0.0051 in the authors' code and solo-learn (the paper's
    # text: 5·10⁻³, also lightly's default)
    lambd: float = 0.0051  # λ, the weight of the off-diagonal term
    # The loss's multiplier: solo-learn's CIFAR barlow.yaml 0.1 (its method default 0.024,
    # its loss function's 0.025; the paper has none)
    scale_loss: float = 0.1  # multiplier of the whole loss
    # 512→2048 (BN, ReLU)→2048 (BN, ReLU)→2048, biases throughout (solo-learn CIFAR)
    proj_hidden: int = 2048  # projector hidden width
    proj_dim: int = 2048  # projection (embedding) dimension


class BarlowTwins(Method):
    def __init__(self, cfg: BarlowTwinsConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        self.student = Encoder(backbone, expander(backbone.feature_dim, cfg.proj_hidden, cfg.proj_dim))

    def forward(self, batch: ViewBatch) -> MethodOutput:
        student = self.encode(batch.views["global"])
        z1, z2 = student.projection.chunk(2)
        # The correlation is over the global batch (the authors all-reduce it); on one
        # process the gathers pass straight through.
        z1, z2 = gather_with_full_grad(z1), gather_with_full_grad(z2)
        loss = self.cfg.scale_loss * barlow_twins_loss(z1, z2, self.cfg.lambd)
        return MethodOutput(loss=loss, features=student.features.detach(), embedding=z1.detach())


# solo-learn's CIFAR barlow.yaml: its asymmetric views, its LARS (warm-up from 3e-5) and its
# plain BN over each view's batch (one GPU). Project-wide instead: 200 epochs (solo-learn
# trains 1000: CIFAR-10 92.10 %, CIFAR-100 70.90 % online linear).
# ``lightly``: its BarlowTwinsModel (fastssl/recipes/lightly.py): BarlowTwinsLoss() (λ 5e-3, no
# scale), BarlowTwinsProjectionHead(512, 2048, 2048), its SGD without warm-up. Not expressible: its
# loss standardises with the unbiased std and no ε (fastssl: BatchNorm's biased variance + 1e-5).
register(
    "barlow_twins", BarlowTwins, BarlowTwinsConfig, summary="Barlow Twins · solo-learn (LARS)",
    views=SOLO_ASYMMETRIC, optim=SOLO_LARS, model=SOLO_MODEL,
    conventions={"lightly": lightly.convention(
        BarlowTwinsConfig(), SOLO_LARS, SOLO_MODEL, optim=lightly.SGD, model=lightly.MODEL,
        method={"lambd": 5e-3, "scale_loss": 1.0, "proj_hidden": 2048, "proj_dim": 2048})},
)
