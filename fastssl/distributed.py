"""Cross-process gathers. Single-process runs pass straight through."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


@torch.no_grad()
def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every process along dim 0 (rank order), no gradient."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def gather_with_grad(x: Tensor) -> Tensor:
    """Like ``gather``, but gradients flow back into this process's own slice.

    Each process's loss then differentiates its own features; DDP's gradient averaging
    supplies the rest (the SimCLR/MoCo v3 convention for in-batch negatives).
    """
    if world_size() == 1:
        return x
    parts = list(gather(x).chunk(world_size()))
    parts[rank()] = x
    return torch.cat(parts)


class _GatherAllGradients(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return gather(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(world_size())[rank()]


def gather_with_full_grad(x: Tensor) -> Tensor:
    """Like ``gather_with_grad`` for a loss that every process computes whole on the
    gathered batch (Barlow Twins, VICReg: batch statistics, no per-query terms): each slice
    gets the gradient summed over every process's copy of the loss (VICReg's
    FullGatherLayer), so after DDP's averaging the parameters get the loss's full gradient
    rather than 1/world of it."""
    if world_size() == 1:
        return x
    return _GatherAllGradients.apply(x)


def convert_sync_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Turn the plain BN layers of a ``sync_bn`` backbone into ``SyncBatchNorm``."""
    if world_size() == 1:
        return module
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
