"""SimSiam — "Exploring Simple Siamese Representation Learning" (Chen & He, 2021).

BYOL without the momentum encoder: one encoder f (backbone and projector) sees both views,
a predictor h maps one view's projection onto the other's, and a stop-gradient on the
target side is all that prevents collapse (§4.1). Symmetric loss (Eq. 4):

    L = ½·D(p₁, stopgrad(z₂)) + ½·D(p₂, stopgrad(z₁)),   D = negative cosine (Eq. 1).

The projector ends in a BN and no ReLU (§3), without affine parameters (the authors' code;
"not necessary", §4.4). The predictor is a bottleneck (2048→512→2048, BN and ReLU on the
hidden layer only, §3) whose learning rate is not decayed (Table 1c, "lr not decayed",
used from §4.2 on; the authors' ``--fix-pred-lr``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

from fastssl.config import ModelConfig, OptimConfig, TrainConfig
from fastssl.losses.cosine import negative_cosine
from fastssl.methods.base import Encoder, Method, MethodOutput
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.recipes import Views, lightly, register
from fastssl.train.optim import decay_groups
from pipelines.batch import ViewBatch
from pipelines.spec import ViewConfig


@dataclass(frozen=True)
class SimSiamConfig:
    # CIFAR (Appendix D): "a 2-layer projection MLP. The outputs are 2048-d" — 512→2048
    # (BN, ReLU)→2048 (BN without affine), no biases (the authors' code).
    proj_hidden: int = 2048  # projector hidden width
    proj_dim: int = 2048  # projection (embedding) dimension
    pred_hidden: int = 512  # the predictor's bottleneck (§3, "h's hidden layer's dimension is 512")
    predictor_fixed_lr: bool = True  # the peak lr throughout, not the schedule (Table 1c)


class SimSiam(Method):
    def __init__(self, cfg: SimSiamConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        projector = mlp(
            [backbone.feature_dim, cfg.proj_hidden, cfg.proj_dim],
            hidden_bn=True, last_bn=True, bias=False, last_bn_affine=False,
        )
        # The hidden layer keeps a bias before its BN (which cancels it): the output layer
        # needs one, and ``mlp`` sets biases for every layer.
        predictor = mlp([cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim], hidden_bn=True)
        self.student = Encoder(backbone, projector, predictor)

    def param_groups(self, cfg: OptimConfig) -> list[dict]:
        """The encoder on the schedule; the predictor at the peak lr when ``predictor_fixed_lr``."""
        student = self.student
        encoder = chain(student.backbone.parameters(), student.projector.parameters())
        assert student.predictor is not None
        predictor = student.predictor.parameters()
        return decay_groups(encoder, cfg) + decay_groups(predictor, cfg, fixed_lr=self.cfg.predictor_fixed_lr)

    def forward(self, batch: ViewBatch) -> MethodOutput:
        student = self.encode(batch.views["global"])
        z1, z2 = student.projection.chunk(2)
        p1, p2 = student.predicted.chunk(2)
        # negative_cosine stops the gradient at its target: z reaches the loss only through p.
        loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
        return MethodOutput(loss=loss, features=student.features.detach(), embedding=z1.detach())


# The paper's CIFAR-10 recipe (Appendix D): SGD at 0.03 × batch/256 with weight decay 5e-4,
# no warm-up (the paper warms up only batches of 1024 and more, §4.3), cosine; its CIFAR
# views are its ImageNet ones at 32 px "without blur". Project-wide instead of the paper's:
# batch 256 (the paper: 512, ``--optim.batch-size 512`` keeps its lr per image), 200
# epochs (800), split-BN in 8 groups. Sources disagree: solo-learn's CIFAR config uses SGD
# 0.5 × batch/256, wd 1e-5, a 3-layer projector, blurred views with crop scale 0.08–1 and
# 1000 epochs; lightly's CIFAR benchmark SGD 0.06 unscaled with wd 5e-4. The paper comes first.
# ``lightly``: its SimSiamModel (fastssl/recipes/lightly.py): SGD at 0.06 "no lr-scaling", the
# predictor on the schedule with the rest, SimSiamPredictionHead(2048, 512, 2048), plain BN. Not
# expressible: its SimSiamProjectionHead(512, 2048, 2048) has three layers (fastssl's two).
_OPTIM = OptimConfig(lr_per_256=0.03, weight_decay=5e-4, warmup_epochs=0)
register(
    "simsiam", SimSiam, SimSiamConfig, summary="SimSiam, fixed-lr predictor · the paper's CIFAR setting",
    views=Views(TrainConfig, {"views": ViewConfig(blur_p=0.0)}), optim=_OPTIM,
    conventions={"lightly": lightly.convention(
        SimSiamConfig(), _OPTIM, ModelConfig(), optim={**lightly.SGD, "lr_scaling": "none"}, model=lightly.MODEL,
        method={"proj_hidden": 2048, "proj_dim": 2048, "pred_hidden": 512, "predictor_fixed_lr": False})},
)
