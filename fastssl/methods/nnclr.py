"""NNCLR — "With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of
Visual Representations" (Dwibedi et al., 2021), as Mini-SSL runs it on CIFAR: symmetric
loss, split-BN, top-1 (or top-k) neighbours.

One encoder, no momentum network. The positive of a view's prediction is not the other
view's projection but that projection's nearest neighbour in a support set Q of past
projections (Eq. 2), contrasted against the neighbours and predictions of the other images
of the batch. Symmetric: each view's prediction takes the neighbours of the other view, the
two directions averaged. The support set receives the projections of the second view
(Mini-SSL's ``loss_12``) after the optimiser step, so both directions search it as it was
before the step.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from fastssl.distributed import gather, gather_with_grad, rank
from fastssl.losses.neighbours import nearest_neighbours, nnclr_loss
from fastssl.methods.base import Encoder, Method, MethodOutput
from fastssl.methods.memory import FeatureQueue
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.recipes import register
from fastssl.recipes.defaults import mini_ssl_tiny_imagenet
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class NNCLRConfig:
    temperature: float = 0.2  # τ (Mini-SSL script; the paper: 0.1 on ImageNet)
    top_k: int = 1  # neighbours per projection (Mini-SSL: 1 in runs *_5, 5 in runs *_5a)
    memory_size: int = 4096  # support set Q (Mini-SSL CIFAR; Tiny-ImageNet 16384; the paper 98,304)
    # Projector 512→2048→2048→128, BN after every layer, no biases; predictor 128→2048 (BN,
    # ReLU)→128 (Mini-SSL NNCLR.py: lightly's heads at 2048 hidden, 128 out)
    proj_hidden: int = 2048  # projector hidden width
    proj_dim: int = 128  # projection (embedding) dimension
    pred_hidden: int = 2048  # predictor hidden width
    symmetric: bool = True  # both views' predictions, loss averaged (Mini-SSL --symmetric)


class NNCLR(Method):
    def __init__(self, cfg: NNCLRConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        dims = [backbone.feature_dim, cfg.proj_hidden, cfg.proj_hidden, cfg.proj_dim]
        projector = mlp(dims, hidden_bn=True, last_bn=True, bias=False)
        predictor = mlp([cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim], hidden_bn=True)
        self.student = Encoder(backbone, projector, predictor)
        self.support = FeatureQueue(cfg.memory_size, cfg.proj_dim)

    def contrast(self, prediction: Tensor, projection: Tensor, support: Tensor) -> Tensor:
        """One direction: ``prediction`` of one view against the neighbours of the other
        view's ``projection``, with every process's images as negatives."""
        _, neighbours = nearest_neighbours(projection, support, self.cfg.top_k)
        offset = rank() * len(prediction)
        return nnclr_loss(
            prediction, neighbours, gather_with_grad(prediction), gather(neighbours), self.cfg.temperature, offset
        )

    def forward(self, batch: ViewBatch) -> MethodOutput:
        student = self.encode(batch.views["global"])
        z1, z2 = student.projection.chunk(2)
        p1, p2 = student.predicted.chunk(2)
        support = self.support.features  # as it was before this step, for both directions
        loss = self.contrast(p1, z2, support)
        if self.cfg.symmetric:
            loss = 0.5 * (loss + self.contrast(p2, z1, support))
        # The support set takes this step's projections of the second view, after the step.
        return MethodOutput(loss=loss, features=student.features.detach(), embedding=z1.detach(),
                            enqueue={"support": z2.detach()})


# Mini-SSL's recipe (main_pretrain_evaluation.sh, NNCLR.py). Sources disagree: the paper
# (ImageNet) uses τ 0.1, a support set of 98,304, d 256 and a 4096-wide predictor;
# solo-learn's CIFAR config τ 0.2, a 65,536 queue, d 256, LARS 0.4 for 1000 epochs; Mini-SSL's
# CIFAR settings are kept. Top-5 neighbours (--method.top-k 5) are Mini-SSL's runs *_5a; its
# top-k loss sums the k positives of each prediction (not averaged), as fastssl does.
register(
    "nnclr", NNCLR, NNCLRConfig, summary="NNCLR (top-1; top-k option) · Mini-SSL",
    presets=mini_ssl_tiny_imagenet(NNCLRConfig),
)
