"""Optimisers: SGD and AdamW from torch, and LARS (You et al., 2017), which torch lacks.

Parameter groups come from ``Method.param_groups``; a group may carry two flags read here
and by the loop: ``lars_exclude`` (no trust-ratio adaptation, as solo-learn's
``exclude_bias_n_norm``) and ``fixed_lr`` (the peak lr throughout, SimSiam's predictor).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from fastssl.config import OptimConfig


def decay_groups(params: Iterable[nn.Parameter], cfg: OptimConfig, **flags) -> list[dict]:
    """One group of ``params`` with ``cfg.weight_decay``, or, for LARS with
    ``lars_exclude_bias_and_norm``, two: the weights, and the biases and norm parameters
    (every parameter of one dimension) without weight decay or adaptation."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer != "lars" or not cfg.lars_exclude_bias_and_norm:
        return [{"params": params, "weight_decay": cfg.weight_decay, **flags}]
    weights = [p for p in params if p.ndim > 1]
    biases_and_norms = [p for p in params if p.ndim <= 1]
    groups = [{"params": weights, "weight_decay": cfg.weight_decay, **flags}]
    if biases_and_norms:
        groups.append({"params": biases_and_norms, "weight_decay": 0.0, "lars_exclude": True, **flags})
    return groups


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise lr (You et al., 2017, Algorithm 1) as solo-learn's
    CIFAR recipes run it: each weight tensor's step is lr·min(1, r/lr) with the local lr
    r = η‖w‖ / (‖g‖ + λ‖w‖) — the "clip_lr" (LARC) form, so no layer moves faster than the
    global schedule. Groups flagged ``lars_exclude`` take plain SGD steps."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            decay, lr, adapt = group["weight_decay"], group["lr"], not group.get("lars_exclude", False)
            if adapt:  # from the raw gradients' norms
                norms = zip(torch._foreach_norm(params), torch._foreach_norm(grads), strict=True)
                scales = [_layer_scale(w, g, decay, group["eta"], lr) for w, g in norms]
            if decay:
                grads = torch._foreach_add(grads, params, alpha=decay)
            if adapt:
                grads = torch._foreach_mul(grads, scales)
            buffers = []
            for p, g in zip(params, grads, strict=True):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                buffers.append(state["momentum_buffer"])
            torch._foreach_add_(params, buffers, alpha=-lr)
        return None


def _layer_scale(weight_norm: Tensor, grad_norm: Tensor, decay: float, eta: float, lr: float) -> Tensor:
    """min(1, r/lr) for the local lr r = η‖w‖/(‖g‖ + λ‖w‖); 1 where a norm is 0."""
    local = eta * weight_norm / (grad_norm + decay * weight_norm + 1e-8)
    scale = (local / lr).clamp(max=1.0) if lr > 0 else torch.ones_like(local)
    return torch.where((weight_norm > 0) & (grad_norm > 0), scale, torch.ones_like(scale))


def build_optimizer(groups: list[dict], cfg: OptimConfig, fused: bool = False) -> torch.optim.Optimizer:
    """``fused``: torch's single-kernel SGD/AdamW (CUDA); LARS always runs its foreach ops."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=fused or None)
    if cfg.optimizer == "lars":
        return LARS(groups, lr=cfg.lr, momentum=cfg.momentum, eta=cfg.lars_eta)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), fused=fused or None)
