"""Projection and prediction heads (MLPs)."""

from __future__ import annotations

from torch import nn


def mlp(
    dims: list[int], hidden_bn: bool = False, last_bn: bool = False, bias: bool = True
) -> nn.Sequential:
    """Linear layers ``dims[0] → … → dims[-1]`` with ReLU (after BN, if asked) between them.

    MoCo v2: ``mlp([512, 2048, 128])``; SimCLR as Mini-SSL runs it:
    ``mlp([512, 2048, 128], hidden_bn=True, last_bn=True, bias=False)``.
    """
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        last = i == len(dims) - 2
        layers.append(nn.Linear(fan_in, fan_out, bias=bias))
        if (hidden_bn and not last) or (last_bn and last):
            layers.append(nn.BatchNorm1d(fan_out))
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
