"""Linear evaluation of a frozen backbone: the Mini-SSL and lightly protocols, which train a
linear classifier on augmented views, and a fast probe on cached features.

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

**lightly protocol** (lightly-ai/lightly v1.4.24, commit 6bed85df98e0b8a4a1784c20b66a0b6ac499cc3e,
2023-12-13, the last release of 2023: ``benchmarks/imagenet/resnet50/linear_eval.py``, the
same settings since commit 0f119f94cf2b2dedb28b69716666291363b360b7, with
``lightly/utils/benchmarking/linear_classifier.py`` as of commit
02eca6d7b4d3c0fe908c3b4d9de6bd87f64100d7 and ``lightly/utils/scheduler.py``), SimCLR's
settings: the backbone frozen (no gradients) and put in eval mode at every training epoch,
its flattened features un-normalised into ``nn.Linear(D, C)`` with PyTorch's default
initialisation; 90 epochs, batch 256 (2 GPUs × 128), plain SGD (momentum 0.9, no Nesterov,
no weight decay) at lr 0.1 × batch / 256; the lr follows lightly's ``CosineWarmupScheduler``
stepped every batch, without warm-up, from 1 to 0.001 of its peak over all the steps (the
last step at exactly 0.001); training views RandomResizedCrop(224, scale 0.08–1) and a
horizontal flip, shuffled, the last incomplete batch dropped; cross-entropy; top-1 and top-5
on the validation images after every epoch, of which lightly prints each one's maximum over
the epochs. We report the last epoch's top-1 and top-5 with the best of each beside it.
fastssl's departures: the views at the pre-training view's size and normalisation (lightly:
224 px and ImageNet's); the test images are the whole centred square at that size (lightly:
Resize(256) then CenterCrop(224), the central 87.5 %); bf16 autocast for the backbone and an
fp32 classifier (lightly's default precision is fp16-mixed, classifier included). Releases
of lightly before v1.4.24 (commit 66ad1b40, 2023-12-07) left the frozen backbone in train
mode while the classifier trained, so that its BN statistics followed the training batches;
we keep it in eval mode, as v1.4.24 does.

Both protocols report top-5 beside top-1 where the data set has more than five classes
(``None`` otherwise: every prediction would count).

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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
    """A protocol that trains a linear head on the frozen backbone; the defaults are the
    Mini-SSL protocol's (main_linear_eval.py) unless noted, ``LIGHTLY`` lightly's."""

    name: Literal["mini-ssl", "lightly"] = "mini-ssl"  # the result's "protocol"
    epochs: int = 100
    batch_size: int = 256
    lr: float = 30.0  # the peak lr, at batch lr_base_batch where that is set
    lr_base_batch: int | None = None  # the lr scales as batch_size / lr_base_batch (lightly: 256); None: as given
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: Literal["multistep", "cosine"] = "multistep"  # multistep: per epoch; cosine: per step (lightly)
    milestones: tuple[float, ...] = (0.6, 0.8)  # multistep: fractions of epochs, Mini-SSL's 60 and 80 of 100
    gamma: float = 0.1  # multistep: lr factor at each milestone
    warmup_epochs: int = 0  # cosine: epochs of linear warm-up before the decay (lightly's linear eval: none)
    final_lr_fraction: float = 0.001  # cosine: the last step's lr as a fraction of the peak (lightly's end_value)
    head_init_std: float | None = 0.01  # weights N(0, std²), zero bias; None: nn.Linear's own init (lightly)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # torchvision's RandomResizedCrop default
    eval_batch_size: int = 1024  # images per forward when extracting test features (fastssl)
    seed: int = 1339  # order and views of the training batches (Mini-SSL's seed)


LIGHTLY = LinearConfig(
    name="lightly", epochs=90, batch_size=256, lr=0.1, lr_base_batch=256, momentum=0.9, nesterov=False,
    weight_decay=0.0, schedule="cosine", warmup_epochs=0, final_lr_fraction=0.001, head_init_std=None,
)
PROTOCOLS = {"mini-ssl": LinearConfig(), "lightly": LIGHTLY}  # the protocols that train a head, by name
TOP5 = 5  # top-5 is reported only with more classes than this: with fewer every prediction counts


def peak_lr(cfg: LinearConfig) -> float:
    """The schedule's largest lr: ``lr``, scaled linearly with the batch where ``lr_base_batch`` says."""
    return cfg.lr if cfg.lr_base_batch is None else cfg.lr * cfg.batch_size / cfg.lr_base_batch


def step_lr(cfg: LinearConfig, epoch: int) -> float:
    """The lr of ``epoch`` (counted from 0): ``MultiStepLR`` stepped once per epoch."""
    passed = sum(epoch >= round(fraction * cfg.epochs) for fraction in cfg.milestones)
    return peak_lr(cfg) * cfg.gamma**passed


def cosine_lr(cfg: LinearConfig, step: int, steps_per_epoch: int) -> float:
    """The lr of ``step`` (counted from 0 over all epochs): lightly's ``CosineWarmupScheduler``
    stepped once per batch, its lr rising linearly over the warm-up to reach the peak at the
    warm-up's last step, then falling along a half cosine to ``final_lr_fraction`` of it at
    the last step."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return peak_lr(cfg) * (step + 1) / warmup
    decay_steps, end = cfg.epochs * steps_per_epoch - warmup, cfg.final_lr_fraction
    if decay_steps <= 1:  # lightly's guard against a division by zero
        return peak_lr(cfg) * end
    return peak_lr(cfg) * (end + (1 - end) * (1 + math.cos(math.pi * (step - warmup) / (decay_steps - 1))) / 2)


def scheduled_lr(cfg: LinearConfig, step: int, steps_per_epoch: int) -> float:
    """The lr of training step ``step`` (counted from 0 over all epochs) by the protocol's schedule."""
    if cfg.schedule == "cosine":
        return cosine_lr(cfg, step, steps_per_epoch)
    return step_lr(cfg, step // steps_per_epoch)


def topk_correct(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """How many rows have their label among their ``k`` largest logits (a 0-d tensor)."""
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum()


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


def linear_head(features: int, classes: int, cfg: LinearConfig, device: torch.device) -> nn.Linear:
    """The protocol's classifier: N(0, std²) weights and zero bias, or ``nn.Linear``'s own initialisation."""
    head = nn.Linear(features, classes).to(device)
    if cfg.head_init_std is not None:
        nn.init.normal_(head.weight, std=cfg.head_init_std)
        nn.init.zeros_(head.bias)
    return head


def correct_on_test(head: nn.Linear, test: Tensor, test_labels: Tensor, classes: int) -> list[Tensor]:
    """Correct top-1 and, with more than five classes, top-5 predictions on the test features."""
    with torch.no_grad():
        logits = head(test)
        top1 = (logits.argmax(1) == test_labels).sum()
        return [top1, topk_correct(logits, test_labels, TOP5)] if classes > TOP5 else [top1]


def train_linear(
    backbone: nn.Module,
    data: Path,
    trained_view: ViewConfig,
    cfg: LinearConfig,
    device: torch.device,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train a linear classifier on the frozen ``backbone`` (frozen in place) by the protocol
    ``cfg`` (``LinearConfig()``: Mini-SSL's, ``LIGHTLY``) on the converted data set ``data``;
    ``trained_view``: the pre-training view (its size and normalisation). Returns the
    per-epoch history and the last and best test accuracy (%), top-1 and top-5; ``on_epoch``
    is called with each epoch's record."""
    start = time.perf_counter()
    backbone = freeze(backbone, device)
    recipe = ViewRecipe({"global": [train_view(trained_view, cfg.crop_scale)]})
    loader = Loader(data, recipe, cfg.batch_size, device, cfg.seed)
    info = loader.info
    test, test_labels = split_features(backbone, loader, info.eval_split, cfg.eval_batch_size)
    head = linear_head(test.shape[1], info.num_classes, cfg, device)
    optimizer = torch.optim.SGD(
        head.parameters(), lr=peak_lr(cfg), momentum=cfg.momentum, nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = len(loader)
    history = []
    for epoch in range(cfg.epochs):
        loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        for step, batch in enumerate(loader, start=epoch * steps_per_epoch):
            labels = batch.labels
            assert labels is not None, "the linear protocol needs a labelled training split"
            for group in optimizer.param_groups:
                group["lr"] = scheduled_lr(cfg, step, steps_per_epoch)
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
        test_correct = correct_on_test(head, test, test_labels, info.num_classes)
        train_loss, train_acc, test_acc, *test_top5 = torch.stack(
            [loss_sum / seen, 100 * correct / seen, *(100 * c / len(test) for c in test_correct)]
        ).tolist()  # the one synchronisation of the epoch
        record = {"epoch": epoch + 1, "lr": scheduled_lr(cfg, epoch * steps_per_epoch, steps_per_epoch),
                  "train_loss": train_loss, "train_acc": train_acc, "test_acc": test_acc,
                  "test_top5": test_top5[0] if test_top5 else None}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return {"protocol": cfg.name, **accuracies(history), "test_images": len(test),
            "seconds": round(time.perf_counter() - start, 1), "config": dataclasses.asdict(cfg), "history": history}


def accuracies(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The last and best epoch's top-1, and the last and best top-5 (the best of each on its
    own, as lightly prints them; ``None`` without top-5)."""
    best = max(history, key=lambda r: r["test_acc"])
    top5 = [r["test_top5"] for r in history if r["test_top5"] is not None]
    return {"last": history[-1]["test_acc"], "best": best["test_acc"], "best_epoch": best["epoch"],
            "last_top5": history[-1]["test_top5"], "best_top5": max(top5) if top5 else None}


TRAINED_HEAD_HEADLINE = ("last", "best", "best_epoch", "last_top5", "best_top5")
HEADLINES = {**{name: TRAINED_HEAD_HEADLINE for name in PROTOCOLS}, "fast": ("test_acc", "weight_decay", "test_top5")}


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """A protocol's result without its history: the accuracies a table reports (the top-5
    ones where the result has them: entries written before top-5 was recorded lack them)."""
    names = HEADLINES.get(result.get("protocol", "fast"), HEADLINES["fast"])
    return {name: result.get(name) for name in names if "top5" not in name or name in result}


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


def _top5_accuracy(head: nn.Linear, features: Tensor, labels: Tensor, num_classes: int) -> float | None:
    """None with five classes or fewer, where every prediction would count."""
    if num_classes <= TOP5:
        return None
    return 100.0 * topk_correct(head(features), labels, TOP5).item() / len(labels)


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
    """Test accuracy (%, top-1 and, with more than five classes, top-5) of the logistic
    regression on cached features, its weight decay chosen on a held-out ``holdout`` share of
    the training features (ties: the stronger decay). Training images labelled −1
    (unlabelled) are left out."""
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
        "test_top5": _top5_accuracy(head, test, test_labels, num_classes),
        "train_acc": _accuracy(head, train, train_labels),
        "weight_decay": chosen,
        "validation_acc": {f"{decay:g}": acc for decay, acc in validation.items()},
        "held_out_images": len(held),
        "test_images": len(test),
        "max_iter": max_iter,
        "seconds": round(time.perf_counter() - start, 1),
    }
