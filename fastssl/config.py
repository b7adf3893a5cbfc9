"""Configuration: nested frozen dataclasses, every field overridable from the command line
(``--optim.batch-size 512``). Units are in the names or the comments. A recipe adds its
``method`` field and cites where each default comes from."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

from pipelines.views import ViewConfig

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
TINY_IMAGENET_MEAN, TINY_IMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    arch: Literal["resnet18", "resnet50"] = "resnet18"
    cifar_stem: bool = True  # 3×3 stride-1 conv1 (Mini-SSL, for 32–64 px images)
    maxpool: bool = False  # stem max-pool: dropped for CIFAR, kept for Tiny-ImageNet (Mini-SSL)
    width: int = 64  # channels of the first stage (64 in the paper)
    norm: Literal["bn", "split_bn", "sync_bn"] = "split_bn"
    # Split-BN groups per view of the global batch, shared out over processes (Mini-SSL: 8 of 32 images).
    bn_splits: int = 8


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 200
    batch_size: int = 256  # global: summed over processes
    lr_per_256: float = 0.06  # SGD lr = lr_per_256 × batch_size / 256 (Mini-SSL)
    momentum: float = 0.9
    weight_decay: float = 5e-4  # on every parameter, BN and biases included (Mini-SSL)
    warmup_epochs: float = 5.0  # linear from 0, then cosine to 0, per step (Mini-SSL)
    probe_lr: float = 0.1  # online linear probe, SGD momentum 0.9, no decay (solo-learn)

    @property
    def lr(self) -> float:
        return self.lr_per_256 * self.batch_size / 256


@dataclass(frozen=True)
class RunConfig:
    name: str = ""  # run folder under out_dir; empty: <method>-<data set folder>
    out_dir: Path = Path("runs")
    seed: int = 1339  # Mini-SSL's seed
    knn_every_epochs: int = 5  # kNN monitor period in epochs (also after the last epoch)
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_before_training: bool = True  # evaluate the untrained network too
    eval_batch_size: int = 1024  # images per forward when extracting features
    log_every_steps: int = 20  # metrics are read from the device only this often
    checkpoint_every_epochs: int = 1
    stop_after_steps: int | None = None  # leave early (with a checkpoint) after this many steps
    stop_after_minutes: float | None = None  # likewise after this much wall-clock time
    progress_bar: bool = True


@dataclass(frozen=True)
class TrainConfig:
    data: Path  # a data set converted by tools/convert.py
    resume: bool = False  # continue runs/<name>/ from its last checkpoint
    views: ViewConfig = field(default_factory=ViewConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


C = TypeVar("C", bound=TrainConfig)


def dataset_presets(cifar10: C) -> dict[str, C]:
    """A recipe's presets per data set, from its CIFAR-10 configuration: the normalisation
    statistics, view size and stem Mini-SSL uses for each (data_public.py, resnet.py).
    Method-specific changes (e.g. MoCo's Tiny-ImageNet momentum) are the recipe's."""
    views, model = cifar10.views, cifar10.model

    def imagenet_like(size: int) -> C:  # ImageNet stem and statistics (fastssl-tuned for Imagenette)
        return replace(
            cifar10,
            views=replace(views, size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD),
            model=replace(model, cifar_stem=False, maxpool=True),
        )

    return {
        "cifar10": cifar10,
        "cifar100": replace(cifar10, views=replace(views, mean=CIFAR100_MEAN, std=CIFAR100_STD)),
        # Mini-SSL: 64 px, 3×3 stem with the max-pool kept.
        "tiny-imagenet": replace(
            cifar10,
            views=replace(views, size=64, mean=TINY_IMAGENET_MEAN, std=TINY_IMAGENET_STD),
            model=replace(model, maxpool=True),
        ),
        # The 32 px copy in ../shared/data: CIFAR geometry, Tiny-ImageNet statistics (fastssl-tuned).
        "tiny-imagenet-32": replace(cifar10, views=replace(views, mean=TINY_IMAGENET_MEAN, std=TINY_IMAGENET_STD)),
        # Mini-SSL's STL-10: 96 px, 3×3 stem with the max-pool kept; ImageNet statistics.
        "stl10": replace(
            cifar10,
            views=replace(views, size=96, mean=IMAGENET_MEAN, std=IMAGENET_STD),
            model=replace(model, maxpool=True),
        ),
        "imagenette-128": imagenet_like(128),
        "imagenette-224": imagenet_like(224),
    }
