"""Cross-process gathers, synchronised batch norm and the averaging of per-process BN
statistics. Single-process runs pass straight through: nothing here changes what one
process computes."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


@torch.no_grad()
def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every process along dim 0 (rank order), no gradient."""
    if world_size() == 1:
        return x
    x = x.contiguous()  # before empty_like: the parts must share its (dense, row-major) layout
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts)


class _GatherAllGradients(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return gather(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(world_size())[rank()]


def gather_with_full_grad(x: Tensor) -> Tensor:
    """``x`` from every process (rank order), each slice getting the gradient of every
    process's loss: the backward sums the gathered tensor's gradient over the processes
    (one all-reduce) and keeps this process's rows (VICReg's FullGatherLayer,
    ``torch.distributed.nn.all_gather``).

    With it a W-process run trains as one process holding the whole batch. Let each
    process's loss L_r be the reference's loss computed on its share — the mean of its own
    per-query terms (InfoNCE, whose mean over the shares is the reference's mean), or the
    whole-batch loss itself on every process (Barlow Twins, VICReg). This process's rows
    then receive ∂(Σ_s L_s)/∂x_r, its backward turns them into its parameters' share of
    ∂(Σ_s L_s)/∂θ, and DDP's average over the W processes gives ∂((1/W)·Σ_s L_s)/∂θ: the
    reference's gradient in both cases ((1/W)·Σ_s L_s is the reference's loss). A gather
    that sends a process only its own loss's gradient drops the terms ∂L_s/∂x_r of the
    other processes' queries against its rows, a different gradient."""
    if world_size() == 1:
        return x
    return _GatherAllGradients.apply(x)


def gather_with_grad(x: Tensor) -> Tensor:
    """``gather_with_full_grad`` under the name the in-batch-negative losses (SimCLR,
    NNCLR) use: every process's queries differentiate every process's candidates."""
    return gather_with_full_grad(x)


PLAIN_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm over every process's batch: one all-gather of each
    process's count, mean and sum of squared deviations forward (combined as Chan et al.
    do, in fp32 or the input's wider type), one all-reduce of Σg and Σg·x̂ backward, so each
    process's input gets the gradient of every process's loss through the shared
    statistics (∂(Σ_s L_s)/∂x, as ``gather_with_full_grad`` gives; DDP's average then makes
    it the single-process gradient). The parameters' gradients are this process's share
    (DDP averages them alike). Any backend (gloo on the CPU, NCCL), and under ``no_grad``
    (a teacher); no value is read on the host."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None,  # type: ignore[override]
                running_mean: Tensor | None, running_var: Tensor | None, eps: float, momentum: float) -> Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        dims = [d for d in range(x.dim()) if d != 1]
        count = x.numel() // x.shape[1]
        mean = x.mean(dims, dtype=dtype)
        shape = [1, -1] + [1] * (x.dim() - 2)
        deviations = (x.to(dtype) - mean.view(shape)).square().sum(dims)
        local = torch.cat([mean.new_full((1,), float(count)), mean, deviations])
        counts, means, squares = gather(local[None]).split([1, mean.numel(), mean.numel()], dim=1)
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        var = (squares.sum(0) + (counts * (means - mean).square()).sum(0)) / total  # biased, as BN normalises
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None and running_var is not None:
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            running_var.lerp_((var * total / (total - 1).clamp(min=1)).to(running_var.dtype), momentum)
        scale = invstd if weight is None else invstd * weight.to(dtype)
        shift = -mean * scale if bias is None else bias.to(dtype) - mean * scale
        out = (x.to(dtype) * scale.view(shape) + shift.view(shape)).to(x.dtype)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.total = total
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        dtype, shape = mean.dtype, [1, -1] + [1] * (x.dim() - 2)
        dims = [d for d in range(x.dim()) if d != 1]
        g = grad.to(dtype)
        normalised = (x.to(dtype) - mean.view(shape)) * invstd.view(shape)
        sums = torch.cat([g.sum(dims), (g * normalised).sum(dims)])
        grad_bias, grad_weight = sums.clone().chunk(2)  # this process's share
        dist.all_reduce(sums)
        sum_g, sum_g_normalised = (s / ctx.total for s in sums.chunk(2))
        gain = invstd if weight is None else invstd * weight.to(dtype)
        grad_x = (g - sum_g.view(shape) - normalised * sum_g_normalised.view(shape)) * gain.view(shape)
        if weight is None:
            return grad_x.to(x.dtype), None, None, None, None, None, None
        return (grad_x.to(x.dtype), grad_weight.to(weight.dtype), grad_bias.to(weight.dtype),
                None, None, None, None)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training-mode statistics are those of every process's batch
    together (``_SyncBatchNormFunction``: one all-gather forward, one all-reduce backward,
    no host synchronisation), on any device and backend. In evaluation mode, or with one
    process, it is plain BN. Same parameters, buffers and state-dict keys as the BN it
    replaces. Not ``torch.nn.SyncBatchNorm``: DDP refuses that on the CPU, its function
    runs only on CUDA, and there it reads the gathered counts on the host (a device
    synchronisation per layer and call)."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or world_size() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        running_mean, running_var = None, None
        if self.track_running_stats:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as BN
                factor = 1.0 / float(self.num_batches_tracked)
            running_mean, running_var = self.running_mean, self.running_var
        return _SyncBatchNormFunction.apply(input, self.weight, self.bias, running_mean, running_var, self.eps, factor)


def convert_sync_bn(module: nn.Module) -> nn.Module:
    """With several processes, every plain BN layer of ``module`` (``BatchNorm1d/2d/3d``,
    not their subclasses: split-BN's groups are fixed-size blocks of one process's batch,
    the same whatever the process count, so they stay per process) becomes a
    ``SyncBatchNorm`` holding the same parameters and buffers; ``module`` itself otherwise,
    with one process (nothing changes)."""
    if world_size() == 1:
        return module
    if type(module) in PLAIN_BATCH_NORMS:
        assert isinstance(module, nn.modules.batchnorm._BatchNorm)
        synced = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        synced.running_mean, synced.running_var = module.running_mean, module.running_var
        synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        converted = convert_sync_bn(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def synchronised_bn_layers(module: nn.Module) -> int:
    """How many ``SyncBatchNorm`` layers ``module`` holds (each costs one collective per
    training-mode forward call and one per backward)."""
    return sum(isinstance(m, SyncBatchNorm) for m in module.modules())


@torch.no_grad()
def average_running_stats(module: nn.Module) -> None:
    """Average the running statistics of ``module``'s per-process BN layers (split-BN; not
    the synchronised ones, equal on every process already) over the processes, in one
    all-reduce. A running statistic is an exponential moving average — linear in the batch
    statistics — and every process holds the same number of equal-sized groups, so the
    average of the processes' averages is what one process holding the whole batch has
    (the mean over all its groups), whenever it is taken. ``Method.push_memories`` calls
    it every step, so every process holds those statistics at every step (evaluation and
    checkpoints read them; DDP then need not broadcast rank 0's buffers)."""
    world = world_size()
    if world == 1:
        return
    buffers = [b for m in module.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, SyncBatchNorm | nn.SyncBatchNorm)
               for b in (m.running_mean, m.running_var) if b is not None]
    for dtype in sorted({b.dtype for b in buffers}, key=str):  # one all-reduce per dtype (fp32 in practice)
        same = [b for b in buffers if b.dtype == dtype]
        flat = _flatten_dense_tensors(same)
        dist.all_reduce(flat)
        flat /= world
        torch._foreach_copy_(same, list(_unflatten_dense_tensors(flat, same)))


@torch.no_grad()
def sum_over_processes(x: Tensor) -> Tensor:
    """``x`` summed over every process (a copy; ``x`` itself on one process)."""
    if world_size() == 1:
        return x
    total = x.clone()
    dist.all_reduce(total)
    return total
