"""Projection and prediction heads (MLPs).

Their BN layers are plain ``BatchNorm1d``; in a run of several processes ``train.build``
turns them (the teacher's copies too) into ``fastssl.distributed.SyncBatchNorm``, so each
normalises over the global batch, as one process holding it does."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mlp(
    dims: list[int],
    hidden_bn: bool = False,
    last_bn: bool = False,
    bias: bool = True,
    last_bn_affine: bool = True,
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """Linear layers ``dims[0] → … → dims[-1]`` with the activation (after BN, if asked)
    between them.

    MoCo v2: ``mlp([512, 2048, 128])``; SimCLR as Mini-SSL runs it:
    ``mlp([512, 2048, 128], hidden_bn=True, last_bn=True, bias=False)``; SimSiam's and
    MoCo v3's projectors end in a BN without affine parameters (``last_bn_affine=False``);
    DINO's head uses GELU (``activation=nn.GELU``).
    """
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        last = i == len(dims) - 2
        layers.append(nn.Linear(fan_in, fan_out, bias=bias))
        if hidden_bn and not last:
            layers.append(nn.BatchNorm1d(fan_out))
        if last_bn and last:
            layers.append(nn.BatchNorm1d(fan_out, affine=last_bn_affine))
        if not last:
            layers.append(activation(inplace=True) if activation is nn.ReLU else activation())
    return nn.Sequential(*layers)


def expander(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """in → hidden (BN, ReLU) → hidden (BN, ReLU) → out: the three-layer projector of
    Barlow Twins and VICReg (VICReg's "expander"), and VICRegL's two heads."""
    return mlp([in_dim, hidden, hidden, out_dim], hidden_bn=True)


def byol_heads(in_dim: int, hidden: int, out_dim: int, pred_hidden: int) -> tuple[nn.Sequential, nn.Sequential]:
    """BYOL's projector in → hidden (BN, ReLU) → out and predictor out → pred_hidden (BN,
    ReLU) → out (the paper's §3.3 MLPs; Mini-SSL's BYOL.py and MSF.py)."""
    return mlp([in_dim, hidden, out_dim], hidden_bn=True), mlp([out_dim, pred_hidden, out_dim], hidden_bn=True)


class Prototypes(nn.Linear):
    """K prototype vectors as the rows of a weight-normalised linear layer whose gain is
    fixed at 1 (W = V / ‖V‖ row by row): the scores of a unit vector are cosines. SwAV's
    prototypes C and DINO's last layer."""

    def __init__(self, dim: int, count: int) -> None:
        super().__init__(dim, count, bias=False)

    def forward(self, z: Tensor) -> Tensor:
        return F.linear(z, F.normalize(self.weight, dim=1))

    @torch.no_grad()
    def normalize_(self) -> None:
        """Put V itself back on the unit sphere (SwAV's step before each iteration)."""
        self.weight.copy_(F.normalize(self.weight, dim=1))
