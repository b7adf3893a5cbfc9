"""Linear evaluation: the Mini-SSL protocol's schedule and views, a frozen backbone, and the
fast probe on synthetic features."""

import math

import pytest
import torch
import torch.nn.functional as F

from fastssl.config import ModelConfig
from fastssl.eval.linear import LinearConfig, fast_probe, fit_logistic, step_lr, train_linear, train_view
from fastssl.models.backbone import backbone_from_config
from pipelines.spec import ViewConfig


def test_schedule_is_mini_ssl_multistep():
    cfg = LinearConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (100, 256, 30.0, 0.9, 0.0)
    lrs = {epoch: step_lr(cfg, epoch) for epoch in (0, 59, 60, 79, 80, 99)}
    assert lrs == pytest.approx({0: 30.0, 59: 30.0, 60: 3.0, 79: 3.0, 80: 0.3, 99: 0.3})
    # The milestones scale with the epochs: 60 % and 80 % of them.
    short = LinearConfig(epochs=10)
    assert [step_lr(short, e) for e in range(10)] == pytest.approx([30.0] * 6 + [3.0] * 2 + [0.3] * 2)


def test_training_view_is_crop_and_flip_only():
    trained = ViewConfig(size=64, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), solarize_p=0.2)
    view = train_view(trained)
    assert (view.size, view.mean, view.std) == (64, trained.mean, trained.std)
    assert view.crop_scale == (0.08, 1.0) and view.crop_ratio == (3 / 4, 4 / 3) and view.flip_p == 0.5
    assert view.jitter_p == view.grayscale_p == view.blur_p == view.solarize_p == 0.0


def test_protocol_leaves_the_backbone_unchanged(tiny_dataset):
    torch.manual_seed(0)
    backbone = backbone_from_config(ModelConfig(width=8, norm="bn"), 32, 1)
    for module in backbone.modules():  # running statistics unlike a batch's: train mode would move them
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    modes = []
    backbone.register_forward_pre_hook(lambda module, inputs: modes.append(module.training))
    cfg = LinearConfig(epochs=5, batch_size=16, eval_batch_size=32)
    result = train_linear(backbone.train(), tiny_dataset, ViewConfig(), cfg, torch.device("cpu"))

    after = backbone.state_dict()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    assert modes and not any(modes)  # every forward in eval mode
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
    history = result["history"]
    assert [r["lr"] for r in history] == pytest.approx([30, 30, 30, 3, 0.3])
    assert all(math.isfinite(r["train_loss"]) for r in history)
    assert result["last"] == history[-1]["test_acc"]
    assert result["best"] == max(r["test_acc"] for r in history) == history[result["best_epoch"] - 1]["test_acc"]
    assert result["test_images"] == 24


def clusters(n_per_class, classes, dim, spread, generator):
    centres = torch.randn(classes, dim, generator=generator) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=generator), labels


def test_fast_probe_separates_clusters_and_skips_unlabelled():
    g = torch.Generator().manual_seed(0)
    train, train_labels = clusters(60, 10, 32, 1.0, g)
    test, test_labels = clusters(20, 10, 32, 1.0, torch.Generator().manual_seed(0))
    test = test + 0.1 * torch.randn(test.shape, generator=g)
    # Unlabelled images (−1) with far-off features must not take part.
    train = torch.cat([train, 100 * torch.randn(50, 32, generator=g)])
    train_labels = torch.cat([train_labels, torch.full((50,), -1)])
    result = fast_probe(train, train_labels, test, test_labels, 10, max_iter=100)
    assert result["test_acc"] > 99.0 and result["train_acc"] > 99.0
    assert result["held_out_images"] == 60 and result["test_images"] == 200
    assert f"{result['weight_decay']:g}" in result["validation_acc"]


def test_fast_probe_on_random_labels_is_at_chance():
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(2000, 16, generator=g), torch.randn(2000, 16, generator=g)
    train_labels, test_labels = torch.randint(0, 10, (2000,), generator=g), torch.randint(0, 10, (2000,), generator=g)
    accuracy = fast_probe(train, train_labels, test, test_labels, 10, max_iter=100)["test_acc"]
    assert abs(accuracy - 10.0) < 4 * 100 * math.sqrt(0.1 * 0.9 / 2000)


def test_logistic_regression_reaches_the_optimum():
    """The objective is strictly convex: at its minimum the gradient vanishes."""
    g = torch.Generator().manual_seed(2)
    features, labels = torch.randn(300, 8, generator=g), torch.randint(0, 3, (300,), generator=g)
    decay = 1e-2
    head = fit_logistic(features, labels, 3, decay).requires_grad_(True)
    loss = F.cross_entropy(head(features), labels) + 0.5 * decay * head.weight.square().sum()
    gradients = torch.autograd.grad(loss, list(head.parameters()))
    assert max(g.abs().max().item() for g in gradients) < 1e-4
