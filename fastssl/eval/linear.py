"""Linear evaluation of a frozen backbone: the Mini-SSL protocol, and a fast probe on cached
features.

**Mini-SSL protocol** (pc-cp/Benchmark-Methods-For-MNN, ``main_linear_eval.py``): the
backbone frozen and in eval mode throughout (BN uses its running statistics, also while the
classifier trains), its pooled features un-normalised into ``nn.Linear(D, C)`` initialised
N(0, 0.01²) with zero bias; 100 epochs of batch 256, SGD with Nesterov momentum 0.9, lr 30,
no weight decay, lr ×0.1 at epochs 60 and 80 (``MultiStepLR``); training views
RandomResizedCrop(size, scale 0.08–1) and a horizontal flip only; tested on the un-augmented
test images after every epoch. Mini-SSL reports the best epoch's top-1; we report the last
epoch's with the best beside it. fastssl's departures: the milestones scale with
``epochs`` (60 % and 80 % of them); batches come from ``pipelines.loader.Loader`` (any
converted format, on the CPU or the GPU, the last incomplete batch of an epoch dropped);
the backbone runs under bf16 autocast on CUDA (fp32 on the CPU), the classifier in fp32;
the test features are computed once, since the frozen backbone in eval mode always gives
the same ones.

**Fast probe**: features of the un-augmented training and test images, extracted once,
standardised with the training set's mean and deviation, then an L2-regularised multinomial
logistic regression fitted full-batch on the device by L-BFGS (the linear evaluation of
SimCLR, Chen et al. 2020, appendix B.5, which picks the regularisation from a log-spaced
grid on held-out data). Here the weight decay is chosen from 10⁻⁶ … 1 on a held-out tenth of
the training set, then the classifier is refitted on all of it. Seconds on a GPU instead of
the protocol's 100 augmented epochs, but it sees no augmentation: a quick estimate for
comparing runs, not a substitute for the protocol's figure.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastssl.eval.knn import extract_features
from pipelines.dataset import DatasetInfo
from pipelines.loader import Loader
from pipelines.spec import ViewConfig
from pipelines.views import ViewRecipe


@dataclass(frozen=True)
class LinearConfig:
    """The Mini-SSL protocol (main_linear_eval.py) unless noted."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 30.0
    momentum: float = 0.9  # Nesterov
    weight_decay: float = 0.0
    milestones: tuple[float, ...] = (0.6, 0.8)  # fractions of epochs: Mini-SSL's 60 and 80 of 100
    gamma: float = 0.1  # lr factor at each milestone
    crop_scale: tuple[float, float] = (0.08, 1.0)  # torchvision's RandomResizedCrop default
    eval_batch_size: int = 1024  # images per forward when extracting test features (fastssl)
    seed: int = 1339  # order and views of the training batches (Mini-SSL's seed)


def step_lr(cfg: LinearConfig, epoch: int) -> float:
    """The lr of ``epoch`` (counted from 0): ``MultiStepLR`` stepped once per epoch."""
    passed = sum(epoch >= round(fraction * cfg.epochs) for fraction in cfg.milestones)
    return cfg.lr * cfg.gamma**passed


def train_view(trained_view: ViewConfig, crop_scale: tuple[float, float] = (0.08, 1.0)) -> ViewConfig:
    """The protocol's training view at the pre-training views' size and normalisation:
    RandomResizedCrop and a horizontal flip, every other augmentation off."""
    return ViewConfig(
        size=trained_view.size, crop_scale=crop_scale, flip_p=0.5, jitter_p=0.0, grayscale_p=0.0,
        blur_p=0.0, solarize_p=0.0, mean=trained_view.mean, std=trained_view.std,
    )


def _autocast(device: torch.device) -> torch.autocast:
    """bf16 on CUDA, fp32 on the CPU (the training loop's precision policy)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def freeze(backbone: nn.Module, device: torch.device) -> nn.Module:
    """``backbone`` in eval mode, without gradients, on ``device`` (channels-last), in place."""
    return backbone.eval().requires_grad_(False).to(device).to(memory_format=torch.channels_last)


def split_features(backbone: nn.Module, loader: Loader, split: str, batch_size: int) -> tuple[Tensor, Tensor]:
    """fp32 features and labels of a split's un-augmented images (``Loader.eval_loader``)."""
    with _autocast(loader.device):
        return extract_features(
            backbone, loader.eval_loader(split, batch_size), loader.info.splits[split]["count"]
        )


@dataclass
class SplitFeatures:
    """Backbone features (fp32, on the device) of the un-augmented training and test images."""

    train: Tensor
    train_labels: Tensor
    test: Tensor
    test_labels: Tensor
    info: DatasetInfo


def extract_splits(
    backbone: nn.Module, data: Path, trained_view: ViewConfig, device: torch.device, batch_size: int = 1024
) -> SplitFeatures:
    """Features of the training and evaluation splits of ``data`` at the pre-training view's
    size and normalisation, from ``backbone`` frozen in place (the fast probe's and the
    diagnostics' input)."""
    backbone = freeze(backbone, device)
    # A loader used only for its evaluation batches: the training view never runs.
    loader = Loader(data, ViewRecipe({"global": [trained_view]}), 1, device)
    info = loader.info
    train, train_labels = split_features(backbone, loader, info.train_split, batch_size)
    test, test_labels = split_features(backbone, loader, info.eval_split, batch_size)
    return SplitFeatures(train, train_labels, test, test_labels, info)


def mini_ssl_linear(
    backbone: nn.Module,
    data: Path,
    trained_view: ViewConfig,
    cfg: LinearConfig,
    device: torch.device,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train a linear classifier on the frozen ``backbone`` (frozen in place) by the Mini-SSL
    protocol on the converted data set ``data``; ``trained_view``: the pre-training view
    (its size and normalisation). Returns the per-epoch history and the last and best test
    accuracy (%); ``on_epoch`` is called with each epoch's record."""
    start = time.perf_counter()
    backbone = freeze(backbone, device)
    recipe = ViewRecipe({"global": [train_view(trained_view, cfg.crop_scale)]})
    loader = Loader(data, recipe, cfg.batch_size, device, cfg.seed)
    info = loader.info
    test, test_labels = split_features(backbone, loader, info.eval_split, cfg.eval_batch_size)
    head = nn.Linear(test.shape[1], info.num_classes).to(device)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.SGD(
        head.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )
    history = []
    for epoch in range(cfg.epochs):
        lr = step_lr(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        for batch in loader:
            labels = batch.labels
            assert labels is not None, "the linear protocol needs a labelled training split"
            with torch.no_grad(), _autocast(device):
                features = backbone(batch.views["global"])
            logits = head(features.float())
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(logits)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(logits)
        with torch.no_grad():
            test_correct = (head(test).argmax(1) == test_labels).sum()
        train_loss, train_acc, test_acc = (
            torch.stack([loss_sum / seen, 100 * correct / seen, 100 * test_correct / len(test)]).tolist()
        )  # the one synchronisation of the epoch
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc, "test_acc": test_acc}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    best = max(history, key=lambda r: r["test_acc"])
    return {
        "protocol": "mini-ssl",
        "last": history[-1]["test_acc"],
        "best": best["test_acc"],
        "best_epoch": best["epoch"],
        "test_images": len(test),
        "seconds": round(time.perf_counter() - start, 1),
        "config": dataclasses.asdict(cfg),
        "history": history,
    }


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """A protocol's result without its history: the accuracies a table reports."""
    names = ("last", "best", "best_epoch") if result.get("protocol") == "mini-ssl" else ("test_acc", "weight_decay")
    return {name: result.get(name) for name in names}


WEIGHT_DECAYS = tuple(10.0**exponent for exponent in range(-6, 1))  # 1e-6 … 1


def fit_logistic(
    features: Tensor, labels: Tensor, num_classes: int, weight_decay: float, max_iter: int = 500
) -> nn.Linear:
    """Multinomial logistic regression, mean cross-entropy + weight_decay/2·‖W‖² (bias
    unregularised), fitted full-batch by L-BFGS with a strong-Wolfe line search."""
    head = nn.Linear(features.shape[1], num_classes).to(features.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=1e-6, tolerance_change=1e-9,
    )

    def objective() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(head(features), labels) + 0.5 * weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return head.requires_grad_(False)


def _accuracy(head: nn.Linear, features: Tensor, labels: Tensor) -> float:
    return 100.0 * (head(features).argmax(1) == labels).float().mean().item()


def fast_probe(
    train: Tensor,
    train_labels: Tensor,
    test: Tensor,
    test_labels: Tensor,
    num_classes: int,
    weight_decays: tuple[float, ...] = WEIGHT_DECAYS,
    holdout: float = 0.1,
    max_iter: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Test accuracy (%) of the logistic regression on cached features, its weight decay
    chosen on a held-out ``holdout`` share of the training features (ties: the stronger
    decay). Training images labelled −1 (unlabelled) are left out."""
    start = time.perf_counter()
    labelled = train_labels >= 0
    train, train_labels = train[labelled].float(), train_labels[labelled]
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    train, test = (train - mean) / std, (test.float() - mean) / std
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).to(train.device)
    held = order[: max(1, round(holdout * len(train)))]
    fitted = order[len(held) :]
    validation = {}
    for decay in weight_decays:
        head = fit_logistic(train[fitted], train_labels[fitted], num_classes, decay, max_iter)
        validation[decay] = _accuracy(head, train[held], train_labels[held])
    chosen = max(reversed(weight_decays), key=lambda decay: validation[decay])
    head = fit_logistic(train, train_labels, num_classes, chosen, max_iter)
    return {
        "protocol": "fast",
        "test_acc": _accuracy(head, test, test_labels),
        "train_acc": _accuracy(head, train, train_labels),
        "weight_decay": chosen,
        "validation_acc": {f"{decay:g}": acc for decay, acc in validation.items()},
        "held_out_images": len(held),
        "test_images": len(test),
        "max_iter": max_iter,
        "seconds": round(time.perf_counter() - start, 1),
    }
