"""SimCLR — "A Simple Framework for Contrastive Learning of Visual Representations"
(Chen et al., 2020).

Two views of each image go through one encoder and projection head; each projection must
pick out its partner among the candidates. By default the loss is Mini-SSL's cross-view
InfoNCE: the N×N logits between the two views (no same-view negatives), both directions
averaged, τ = 0.2. ``loss="nt_xent"`` gives the paper's NT-Xent (Eq. 1) over all 2N
projections with 2N − 2 negatives, usually with τ = 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from fastssl.config import ModelConfig, OptimConfig
from fastssl.distributed import gather_with_grad, rank
from fastssl.losses.infonce import Backend, batch_info_nce, nt_xent
from fastssl.methods.base import Encoder, Method, MethodOutput
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.recipes import lightly, register
from pipelines.batch import ViewBatch


@dataclass(frozen=True)
class SimCLRConfig:
    temperature: float = 0.2  # τ (Mini-SSL script; the paper's NT-Xent: 0.5)
    loss: Literal["cross_view", "nt_xent"] = "cross_view"
    """Cross_view: Mini-SSL's N×N cross-view InfoNCE; nt_xent: the paper's 2N−2 negatives."""
    proj_hidden: int = 2048  # 512→2048 (BN, ReLU)→128 (BN), no biases (Mini-SSL SimCLR.py)
    proj_dim: int = 128  # projection (embedding) dimension
    # InfoNCE log-sum-exp: auto (fused Triton kernel on CUDA, else plain) | plain | chunked | fused
    loss_backend: Backend = "auto"
    """InfoNCE log-sum-exp: auto (fused Triton kernel on CUDA, else plain) | plain | chunked | fused."""


class SimCLR(Method):
    def __init__(self, cfg: SimCLRConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        dims = [backbone.feature_dim, cfg.proj_hidden, cfg.proj_dim]
        self.student = Encoder(backbone, mlp(dims, hidden_bn=True, last_bn=True, bias=False))

    def forward(self, batch: ViewBatch) -> MethodOutput:
        student = self.encode(batch.views["global"])
        projections = student.projection
        z1, z2 = projections.chunk(2)
        n, tau, backend = len(z1), self.cfg.temperature, self.cfg.loss_backend
        if self.cfg.loss == "cross_view":
            offset = rank() * n
            loss = 0.5 * (
                batch_info_nce(z1, gather_with_grad(z2), tau, offset, backend)
                + batch_info_nce(z2, gather_with_grad(z1), tau, offset, backend)
            )
        else:
            # Candidates: every process's [z1; z2] block; this process's block starts at 2n·rank.
            candidates = gather_with_grad(projections)
            local = torch.arange(2 * n, device=projections.device) + 2 * n * rank()
            partner = torch.cat([local[n:], local[:n]])
            loss = nt_xent(projections, candidates, local, partner, tau, backend)
        return MethodOutput(loss=loss, features=student.features.detach(), embedding=z1.detach())


# Mini-SSL's SimCLR run: the project's defaults, the same as the MoCo v2 recipe's.
# ``lightly``: its SimCLRModel (fastssl/recipes/lightly.py): NTXentLoss() — τ 0.5 over the 2N − 2
# negatives — and SimCLRProjectionHead(512, 512, 128) (BN after both layers, no biases), its SGD
# without warm-up, plain BN.
register(
    "simclr", SimCLR, SimCLRConfig, summary="SimCLR, cross-view InfoNCE (NT-Xent as an option) · Mini-SSL",
    conventions={"lightly": lightly.convention(
        SimCLRConfig(), OptimConfig(), ModelConfig(), optim=lightly.SGD, model=lightly.MODEL,
        method={"loss": "nt_xent", "temperature": 0.5, "proj_hidden": 512, "proj_dim": 128})},
)
