"""Normalisation layers for backbones: ``bn | split_bn(k) | sync_bn``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """Batch norm computed separately over groups of ``group_size`` consecutive images.

    The MoCo CIFAR demo's trick (used by Mini-SSL) for imitating multi-GPU BN statistics
    on one device. Fixing the group's size rather than the number of groups means a call
    on V views of N images stacked view-major (two global views, or six local crops) makes
    V·k groups of N/k, as k devices would. Groups are contiguous blocks of the batch, so on a channels-last input
    each group is a channels-last slice: the native fused kernel runs on it directly, with
    no memory-format copy (the usual ``view(-1, C·k, H, W)`` needs an NCHW copy per
    layer). The running statistics are the average of the groups' statistics, as in the
    demo; evaluation is plain BN with them.
    """

    def __init__(self, num_features: int, group_size: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if not self.training or n == self.group_size:
            return super().forward(x)
        if n % self.group_size:
            raise ValueError(f"batch of {n} does not split into BN groups of {self.group_size}")
        groups = x.view(n // self.group_size, self.group_size, *x.shape[1:])
        outputs, means, invstds = zip(
            *(
                torch.native_batch_norm(g, self.weight, self.bias, None, None, True, 0.0, self.eps)
                for g in groups.unbind(0)
            ),
            strict=True,
        )
        if self.track_running_stats:
            self._update_running_stats(torch.stack(means), torch.stack(invstds), groups[0][:, 0].numel())
        return torch.stack(outputs).flatten(0, 1)  # keeps the input's memory format

    @torch.no_grad()
    def _update_running_stats(self, means: Tensor, invstds: Tensor, count: int) -> None:
        biased_var = invstds.detach().pow(-2) - self.eps
        unbiased_var = biased_var * count / max(count - 1, 1)
        momentum = self.momentum if self.momentum is not None else 0.1
        # Called only with track_running_stats, so BN registered the buffers (a host-side check).
        assert self.running_mean is not None and self.running_var is not None and self.num_batches_tracked is not None
        self.running_mean.lerp_(means.detach().mean(0), momentum)
        self.running_var.lerp_(unbiased_var.mean(0), momentum)
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
