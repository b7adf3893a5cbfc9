"""Normalisation layers for backbones: ``bn | split_bn(k) | sync_bn``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

GROUP_DIMS = (1, 2, 3)  # of a G×g×H×W×C batch: the images of a group and their pixels


def _grouped(x: Tensor, group_size: int) -> Tensor:
    """N×C×H×W as G×g×H×W×C: a view in any memory format (only the batch dimension is
    split). In channels-last memory each group is then one contiguous block with the
    channel innermost, the layout in which reductions over (g, H, W), eager or compiled,
    run fastest; per-channel parameters broadcast along the last dimension."""
    return x.permute(0, 2, 3, 1).unflatten(0, (-1, group_size))


def _statistics_dtype(x: Tensor) -> torch.dtype:
    """fp32 for bf16/fp16/fp32 batches (autocast's convolutions give bf16), fp64 for fp64."""
    return torch.promote_types(x.dtype, torch.float32)


class _GroupBatchNorm(torch.autograd.Function):
    """Training-mode batch norm with statistics per (group, channel) over the group's
    m = g·H·W values, in fp32 (fp64 for fp64 input) whatever the input's precision (Ioffe &
    Szegedy, 2015, Alg. 1). A few whole-batch ops per layer however many groups: one BN
    call per group would cost an eager step two kernels per group and layer, and make the
    compiled graph, and its compile time, grow with the group count. Saves the input in its
    own dtype and the statistics; the backward recomputes x − μ."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, group_size: int, eps: float):  # type: ignore[override]
        groups = _grouped(x, group_size)
        mean = groups.mean(GROUP_DIMS, keepdim=True, dtype=_statistics_dtype(x))
        centred = groups - mean  # in the statistics' precision (type promotion)
        var = centred.square().mean(GROUP_DIMS, keepdim=True)  # biased, as BN normalises
        invstd = torch.rsqrt(var + eps)
        # Written through a view into a tensor of x's shape and format, so the output is no
        # view (the in-place ReLU after it may edit it). Channels-last makes the view
        # contiguous, a valid out=; a compiled graph would break on any other out=.
        out = torch.empty_like(x)
        target, scale = _grouped(out, group_size), invstd * weight
        if target.is_contiguous():
            torch.addcmul(bias, centred, scale, out=target)
        else:
            target.copy_(torch.addcmul(bias, centred, scale))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.group_size = group_size
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)  # no zero gradients made for the statistics
        return out, mean, var

    @staticmethod
    def backward(ctx, grad: Tensor, _mean: Tensor, _var: Tensor):  # type: ignore[override]
        if grad is None:  # the output took no part in the loss
            return None, None, None, None, None
        x, weight, mean, invstd = ctx.saved_tensors
        groups, grad = _grouped(x, ctx.group_size), _grouped(grad, ctx.group_size)
        m = math.prod(groups.shape[1:4])  # g·H·W, from the shape: no tensor op
        centred = groups - mean
        grad_bias = grad.sum(GROUP_DIMS, keepdim=True, dtype=mean.dtype)  # Σ g
        grad_centred = (grad * centred).sum(GROUP_DIMS, keepdim=True)  # Σ g·(x − μ)
        # ∂L/∂x = γσ⁻¹·(g − Σg/m − (x − μ)·σ⁻²·Σg·(x − μ)/m), in two passes over the batch.
        gain = weight * invstd
        grad_x = torch.addcmul(-gain * grad_bias / m, grad, gain)
        grad_x.addcmul_(centred, gain * invstd.square() * grad_centred / m, value=-1)
        grad_weight = (grad_centred * invstd).sum((0, 1, 2, 3))  # Σ g·x̂
        return (grad_x.to(x.dtype).flatten(0, 1).permute(0, 3, 1, 2), grad_weight.to(weight.dtype),
                grad_bias.sum((0, 1, 2, 3)).to(weight.dtype), None, None)


class SplitBatchNorm2d(nn.BatchNorm2d):
    """Batch norm computed separately over groups of ``group_size`` consecutive images.

    The MoCo CIFAR demo's trick (used by Mini-SSL) for imitating multi-GPU BN statistics
    on one device. Fixing the group's size rather than the number of groups means a call
    on V views of N images stacked view-major (two global views, or six local crops) makes
    V·k groups of N/k, as k devices would. Groups are contiguous blocks of the batch, so
    the batch is viewed as groups×images×H×W×C in any memory format, channels-last
    included, with no copy (the usual ``view(-1, C·k, H, W)`` needs an NCHW copy per
    layer). The running statistics are the average of the groups' statistics, as in the
    demo; evaluation is plain BN with them. Needs the affine parameters (the default).
    """

    def __init__(self, num_features: int, group_size: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if not self.affine:
            raise ValueError("SplitBatchNorm2d needs affine=True")
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        n, _, height, width = x.shape
        if not self.training or n == self.group_size:
            return super().forward(x)
        if n % self.group_size:
            raise ValueError(f"batch of {n} does not split into BN groups of {self.group_size}")
        out, means, variances = _GroupBatchNorm.apply(x, self.weight, self.bias, self.group_size, self.eps)
        if self.track_running_stats:
            self._update_running_stats(means, variances, self.group_size * height * width)
        return out  # in the input's memory format

    @torch.no_grad()
    def _update_running_stats(self, means: Tensor, variances: Tensor, count: int) -> None:
        unbiased = variances * count / max(count - 1, 1)
        momentum = self.momentum if self.momentum is not None else 0.1
        # Called only with track_running_stats, so BN registered the buffers (a host-side check).
        assert self.running_mean is not None and self.running_var is not None and self.num_batches_tracked is not None
        self.running_mean.lerp_(means.mean((0, 1, 2, 3)).to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.mean((0, 1, 2, 3)).to(self.running_var.dtype), momentum)
        self.num_batches_tracked.add_(1)


def norm_layer(kind: str, group_size: int = 1) -> Callable[[int], nn.Module]:
    """A constructor ``channels → layer`` for ``bn``, ``split_bn`` (groups of ``group_size``
    images) or ``sync_bn``.

    ``sync_bn`` builds plain BN; ``fastssl.distributed.convert_sync_bn`` turns it into
    ``SyncBatchNorm`` once a process group exists.
    """
    if kind in ("bn", "sync_bn"):
        return nn.BatchNorm2d
    if kind == "split_bn":
        return lambda channels: SplitBatchNorm2d(channels, group_size)
    raise ValueError(f"unknown norm '{kind}' (bn, split_bn, sync_bn)")


def split_bn_group_size(bn_splits: int, batch_size: int, processes: int) -> int:
    """Images per split-BN group when each view of a global batch of ``batch_size`` is split
    into ``bn_splits`` groups shared out over ``processes``: each process holds
    ``bn_splits / processes`` groups of its ``batch_size / processes`` images per view, so
    the statistics are those of ``bn_splits`` devices whatever the process count."""
    per_process = batch_size // processes
    if bn_splits < 1:
        raise ValueError(f"--model.bn-splits {bn_splits}: must be at least 1")
    if bn_splits % processes or per_process % (bn_splits // processes):
        raise ValueError(
            f"--model.bn-splits {bn_splits}: must share out over {processes} processes and split "
            f"their {per_process} images per view evenly"
        )
    return per_process // (bn_splits // processes)
