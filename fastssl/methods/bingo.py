"""BINGO — "Bag of Instances Aggregation Boosts Self-supervised Distillation" (Xu et al.,
ICLR 2022).

Before training, the frozen teacher gathers a bag for every training image: its K nearest
neighbours among the training images by the cosine similarity of the teacher's backbone
features of the un-augmented images (the authors' ``compute_knn.py``: ``clus_pos_num`` 5,
the image itself left out). Computed once (``prepare``), since the teacher and those images
are fixed; recomputed on resuming.

Every batch is then half anchors and half companions, one image drawn from each anchor's
bag (``Loader.with_companions``; the authors' data set loads one random bag member with each
image, ``moco/folder.py``), both with two augmented views. The student's embedding of an
anchor's first view and of its companion's are contrasted against the teacher's embedding of
the anchor's second view (and, as the authors' code trains it, of the companion's second
view too, and a CutMix of the two first views against both), the negatives a queue of past
teacher anchor embeddings (``fastssl.losses.distillation``: ``bingo_bag_loss``, the code's
objective, by default; ``bingo_loss``, the paper's, with ``--method.objective paper``). Only
the teacher's anchor embeddings are enqueued. The teacher sees the augmented views.

With several processes each process's share of a batch holds its own anchors and their
companions, so the views differ from a single process's (the same images, other positions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fastssl.config import OptimConfig
from fastssl.losses.distillation import bingo_bag_loss, bingo_loss
from fastssl.methods.base import Encoder, MethodOutput, Progress
from fastssl.methods.distillation import Distiller, TeacherConfig, plain_image_outputs
from fastssl.methods.memory import FeatureQueue
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.recipes import register
from pipelines.batch import ViewBatch
from pipelines.loader import Loader
from pipelines.spec import ViewConfig


@dataclass(frozen=True)
class BINGOConfig(TeacherConfig):
    # haohang96/bingo at 1c632fc: scripts/unsupervised/SR18-TR50.sh and main_moco.py, but the
    # queue, sized for ImageNet (65,536): on CIFAR the MoCo v2 recipe's 4,096.
    bag_size: int = 5  # K neighbours per bag, the image itself not counted (compute_knn.py --clus_pos_num)
    temperature: float = 0.2  # τ (--moco_t)
    queue_size: int = 4096  # past teacher anchor embeddings (--moco_k 65,536 on ImageNet)
    objective: Literal["code", "paper"] = "code"  # the authors' code's mixture (with CutMix), or the paper's two terms
    weights: tuple[float, float] = (0.5, 0.5)  # code: (own, cross) positive weights after the first epochs (--lam)
    own_only_epochs: int = 10  # code: epochs weighted (1, 0) first (main_moco.py L374–378)
    cutmix_alpha: float = 2.0  # code: the CutMix box's λ ~ Beta(α, α) (utils.py cutmix)


def cutmix(anchors: Tensor, companions: Tensor, alpha: float) -> tuple[Tensor, float]:
    """The anchors with one box of the companions pasted in, the same box for the whole batch,
    and the share of the anchors' pixels left (the authors' ``utils.py`` ``cutmix`` and
    ``rand_bbox``: λ ~ Beta(α, α), a box of side √(1 − λ) of the image's centred uniformly at
    random, clipped). Drawn on the host from the global generator (saved with checkpoints)."""
    height, width = anchors.shape[-2:]
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    cut = (1 - lam) ** 0.5
    box_h, box_w = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    mixed = anchors.clone()
    mixed[..., top:bottom, left:right] = companions[..., top:bottom, left:right]
    return mixed, 1 - (bottom - top) * (right - left) / (height * width)


def neighbour_bags(features: Tensor, k: int, chunk: int = 4096) -> Tensor:
    """Each row's ``k`` most cosine-similar other rows (n×k indices), in chunks of queries."""
    unit = F.normalize(features.float(), dim=1)
    bags = []
    for start in range(0, len(unit), chunk):
        similarity = unit[start : start + chunk] @ unit.T
        rows = torch.arange(start, min(start + chunk, len(unit)), device=unit.device)
        similarity[rows - start, rows] = -float("inf")  # not its own neighbour
        bags.append(similarity.topk(k, dim=1).indices)
    return torch.cat(bags)


class BINGO(Distiller):
    def __init__(self, cfg: BINGOConfig, backbone: Backbone, student_view: ViewConfig, data: Path) -> None:
        super().__init__(cfg, student_view, data)
        self.cfg = cfg
        dim = backbone.feature_dim
        self.student = Encoder(backbone, mlp([dim, dim, self.teacher_embedding_dim]))  # MoCo v2's head (--mlp)
        self.queue = FeatureQueue(cfg.queue_size, self.teacher_embedding_dim)
        self.weights = (1.0, 0.0)

    def prepare(self, loader: Loader) -> None:
        """The bags, from the teacher's features of the un-augmented training images (its
        outputs of the views are not cached: ``--method.cache-teacher`` is refused)."""
        super().prepare(loader)
        features = plain_image_outputs(self.frozen_teacher, loader).features
        loader.with_companions(neighbour_bags(features, self.cfg.bag_size))

    def before_step(self, progress: Progress) -> None:
        self.weights = (1.0, 0.0) if progress.epoch < self.cfg.own_only_epochs else self.cfg.weights

    def forward(self, batch: ViewBatch) -> MethodOutput:
        images = batch.views["global"]
        first, second = images.chunk(2)  # view 1 of the anchors and companions, view 2 of them
        anchors_1, companions_1 = first.chunk(2)
        student = self.encode(first)
        s_anchor, s_companion = student.projection.chunk(2)
        teacher = self.frozen_teacher(second).embedding
        t_anchor, t_companion = teacher.chunk(2)
        tau = self.cfg.temperature
        if self.cfg.objective == "paper":
            loss = bingo_loss(s_anchor, s_companion, t_anchor, self.queue.features, tau)
        else:
            mixed, kept = cutmix(anchors_1, companions_1, self.cfg.cutmix_alpha)
            s_mixed = self.encode(mixed).projection
            loss = bingo_bag_loss(s_anchor, s_companion, s_mixed, t_anchor, t_companion, self.queue.features, kept,
                                  tau, self.weights)
        return MethodOutput(loss=loss, features=student.features.detach(), embedding=s_anchor.detach(),
                            enqueue={"queue": t_anchor})


# main_moco.py and SR18-TR50.sh: SGD lr 0.03 at batch 256, momentum 0.9, weight decay 1e-4,
# cosine (--decay_method cos), 200 epochs; MoCo v2's views (--aug_plus), Mini-SSL's ops here.
register(
    "bingo", BINGO, BINGOConfig, summary="BINGO: bags of the teacher's neighbours contrasted as positives",
    optim=OptimConfig(epochs=200, lr_per_256=0.03, weight_decay=1e-4, warmup_epochs=0.0),
)
