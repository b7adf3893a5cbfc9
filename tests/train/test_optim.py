"""LARS against a direct transcription of the update, parameter groups and lr scaling."""

import math

import pytest
import torch

from fastssl.config import OptimConfig
from fastssl.train.optim import LARS, build_optimizer, decay_groups
from fastssl.train.schedule import cosine_ramp, linear_ramp


def reference_lars_step(weights, grads, buffers, lr, momentum, decay, eta, adapt):
    """solo-learn's LARS step for each tensor, written out one at a time."""
    out = []
    for w, g, buffer in zip(weights, grads, buffers, strict=True):
        d = g + decay * w  # plain SGD with weight decay where not adapted
        if adapt:
            w_norm, g_norm = w.norm().item(), g.norm().item()
            if w_norm > 0 and g_norm > 0:
                local = eta * w_norm / (g_norm + decay * w_norm + 1e-8)
                d = (g + decay * w) * min(local / lr, 1.0)
        buffer = d if buffer is None else momentum * buffer + d
        out.append((w - lr * buffer, buffer))
    return out


@pytest.mark.parametrize("adapt", [True, False])
def test_lars_matches_the_transcribed_update(adapt):
    torch.manual_seed(0)
    weights = [torch.randn(4, 3), torch.randn(5), torch.zeros(2, 2)]
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    group = {"params": params, "weight_decay": 1e-2, "lars_exclude": not adapt}
    optimizer = LARS([group], lr=0.3, momentum=0.9, eta=0.02)
    buffers = [None] * 3
    current = [w.clone() for w in weights]
    for step in range(3):
        grads = [torch.randn_like(w) * (step + 1) for w in weights]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        results = reference_lars_step(current, grads, buffers, 0.3, 0.9, 1e-2, 0.02, adapt)
        current, buffers = [r[0] for r in results], [r[1] for r in results]
        for p, expected in zip(params, current, strict=True):
            torch.testing.assert_close(p.detach(), expected)


def test_lars_never_steps_faster_than_the_global_lr():
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(8, 8) * 100)  # a huge weight: the local lr is large
    p.grad = torch.randn(8, 8) * 1e-3
    before = p.detach().clone()
    LARS([p], lr=0.1, momentum=0.0, eta=0.02).step()
    torch.testing.assert_close(p.detach(), before - 0.1 * p.grad)  # clipped at the global lr


def test_decay_groups_split_biases_and_norms_for_lars_only():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    sgd = decay_groups(model.parameters(), OptimConfig(weight_decay=5e-4))
    assert len(sgd) == 1 and sgd[0]["weight_decay"] == 5e-4 and len(sgd[0]["params"]) == 4
    lars = decay_groups(model.parameters(), OptimConfig(optimizer="lars", weight_decay=1e-4), fixed_lr=True)
    weights, rest = lars
    assert [p.shape for p in weights["params"]] == [torch.Size([4, 3])] and weights["weight_decay"] == 1e-4
    assert len(rest["params"]) == 3 and rest["weight_decay"] == 0.0 and rest["lars_exclude"]
    assert weights["fixed_lr"] and rest["fixed_lr"]
    keep = decay_groups(model.parameters(), OptimConfig(optimizer="lars", lars_exclude_bias_and_norm=False))
    assert len(keep) == 1


def test_lr_scaling_rules_and_optimiser_choice():
    assert OptimConfig(lr_per_256=0.3, batch_size=1024).lr == pytest.approx(1.2)
    assert OptimConfig(lr_per_256=0.3, batch_size=1024, lr_scaling="sqrt").lr == pytest.approx(0.6)
    assert OptimConfig(lr_per_256=1e-3, batch_size=128, lr_scaling="none").lr == pytest.approx(1e-3)
    params = [torch.nn.Parameter(torch.zeros(2, 2))]
    for name, kind in (("sgd", torch.optim.SGD), ("lars", LARS), ("adamw", torch.optim.AdamW)):
        assert isinstance(build_optimizer([{"params": params}], OptimConfig(optimizer=name)), kind)


def test_schedules():
    assert cosine_ramp(0.99, 1.0, 0.0) == pytest.approx(0.99)
    assert cosine_ramp(0.99, 1.0, 0.5) == pytest.approx(0.995)
    assert cosine_ramp(0.99, 1.0, 1.0) == pytest.approx(1.0)
    assert cosine_ramp(0.99, 1.0, 0.25) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    assert linear_ramp(0.04, 0.07, 0.5) == pytest.approx(0.055) and linear_ramp(0.04, 0.07, 3.0) == 0.07


def test_warmup_then_cosine_or_constant():
    from fastssl.train.schedule import warmup_cosine

    # np.linspace(0, 0.4, 10)[5] (Mini-SSL's cosine_scheduler): the peak at step 9, the cosine from step 10
    assert warmup_cosine(5, 100, 10, 0.4) == pytest.approx(0.4 * 5 / 9)
    assert warmup_cosine(9, 100, 10, 0.4) == pytest.approx(0.4) == warmup_cosine(10, 100, 10, 0.4)
    # solo-learn's LinearWarmupCosineAnnealingLR from warmup_start_lr 3e-5
    assert warmup_cosine(3, 100, 10, 0.4, start=3e-5) == pytest.approx(3e-5 + (0.4 - 3e-5) * 3 / 9)
    assert warmup_cosine(55, 100, 10, 0.4) == pytest.approx(0.2)  # half-way through the cosine
    assert warmup_cosine(99, 100, 10, 0.4, cosine=False) == 0.4
