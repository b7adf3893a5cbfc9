"""Configuration: nested frozen dataclasses, every field overridable from the command line
(``--optim.batch-size 512``). Units are in the names or the comments. A recipe adds its
``method`` field and cites where each default comes from."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from pipelines.views import ViewConfig

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
TINY_IMAGENET_MEAN, TINY_IMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    # ResNets from torchvision's blocks; ViTs from timm (the [vit] extra; DINO, MoCo v3)
    arch: Literal["resnet18", "resnet50", "vit_tiny", "vit_small"] = "resnet18"
    patch_size: int = 4  # ViT patch side in pixels (4 for 32 px images, 16 for 224 px)
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
    optimizer: Literal["sgd", "lars", "adamw"] = "sgd"  # Mini-SSL: SGD; solo-learn's CIFAR LARS recipes
    lr_per_256: float = 0.06  # peak lr at batch 256, scaled to batch_size by lr_scaling (Mini-SSL)
    # linear: lr_per_256 × batch/256 (Goyal et al.); sqrt: × √(batch/256) (LARS, large
    # batches); none: lr_per_256 whatever the batch
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"
    momentum: float = 0.9  # SGD/LARS momentum; AdamW β1
    weight_decay: float = 5e-4  # Mini-SSL: on every parameter, BN and biases included
    # LARS (You et al., 2017): trust coefficient, and biases and norm parameters left out of
    # the adaptation and the weight decay (solo-learn's exclude_bias_n_norm)
    lars_eta: float = 0.02
    lars_exclude_bias_and_norm: bool = True
    warmup_epochs: float = 5.0  # linear from 0, then the schedule, per step (Mini-SSL)
    schedule: Literal["cosine", "constant"] = "cosine"  # after warm-up: cosine to 0 (Mini-SSL), or the peak lr
    # Gradient accumulation over micro-batches; refused for every method whose loss depends
    # on the whole batch (in-batch negatives, BN statistics, queues) — all the current ones.
    accumulate_steps: int = 1
    probe_lr: float = 0.1  # online linear probe, SGD momentum 0.9, no decay (solo-learn)

    @property
    def lr(self) -> float:
        ratio = self.batch_size / 256
        return self.lr_per_256 * {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[self.lr_scaling]


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
    deterministic: bool = False  # deterministic kernels (slower), for bit-reproducible runs
    # Speed switches (a benchmark's plain baseline turns them off). Precision auto: bf16
    # autocast on CUDA, fp32 on the CPU (where bf16 autocast is 15–25× slower).
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    channels_last: bool = True  # weights and views in channels-last memory
    # None = on with CUDA, off on the CPU (where compiling gains nothing here):
    compile: bool | None = None  # torch.compile the student and teacher networks
    cuda_graphs: bool | None = None  # with compile: capture them as CUDA graphs ("reduce-overhead")
    fused_optimizer: bool | None = None  # torch's fused SGD/AdamW kernels
    fused_views: bool | None = None  # all augmentations of ≤ 64 px views in one Triton launch (CUDA)
    tensorboard: bool = False  # also log metrics as TensorBoard scalars (the [report] extra)


@dataclass(frozen=True)
class TrainConfig:
    data: Path  # a data set converted by tools/convert.py
    # Splits trained on, concatenated (STL-10: train and unlabeled); the kNN bank is "train"
    train_splits: tuple[str, ...] = ("train",)
    resume: bool = False  # continue runs/<name>/ from its last checkpoint
    views: ViewConfig = field(default_factory=ViewConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


C = TypeVar("C", bound=TrainConfig)


def with_views(cfg: C, **changes) -> C:
    """``cfg`` with ``changes`` made to every ``ViewConfig`` it holds (a recipe may add view
    fields of its own: BYOL's second view, ReSSL's weak one, SwAV's local crops). A
    ``size`` change scales every view by the same factor, so local crops keep their
    proportion to the global ones."""
    updates: dict[str, Any] = {}  # field name → its new ViewConfig
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, ViewConfig):
            view_changes = dict(changes)
            if "size" in changes:
                view_changes["size"] = round(value.size * changes["size"] / cfg.views.size)
            updates[f.name] = replace(value, **view_changes)
    return replace(cfg, **updates)


def dataset_presets(cifar10: C) -> dict[str, C]:
    """A recipe's presets per data set, from its CIFAR-10 configuration: the normalisation
    statistics, view size and stem Mini-SSL uses for each (data_public.py, resnet.py).
    Method-specific changes (e.g. MoCo's Tiny-ImageNet momentum) are the recipe's."""
    model = cifar10.model

    def imagenet_like(size: int) -> C:  # ImageNet stem and statistics (fastssl-tuned for Imagenette)
        views = with_views(cifar10, size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        return replace(views, model=replace(model, cifar_stem=False, maxpool=True, patch_size=16))

    return {
        "cifar10": cifar10,
        "cifar100": with_views(cifar10, mean=CIFAR100_MEAN, std=CIFAR100_STD),
        # Mini-SSL: 64 px, 3×3 stem with the max-pool kept.
        "tiny-imagenet": replace(
            with_views(cifar10, size=64, mean=TINY_IMAGENET_MEAN, std=TINY_IMAGENET_STD),
            model=replace(model, maxpool=True, patch_size=8),
        ),
        # The 32 px copy in ../shared/data: CIFAR geometry, Tiny-ImageNet statistics (fastssl-tuned).
        "tiny-imagenet-32": with_views(cifar10, mean=TINY_IMAGENET_MEAN, std=TINY_IMAGENET_STD),
        # Mini-SSL's STL-10: 96 px, 3×3 stem with the max-pool kept; ImageNet statistics;
        # trained on the labelled and the 100,000 unlabelled images.
        "stl10": replace(
            with_views(cifar10, size=96, mean=IMAGENET_MEAN, std=IMAGENET_STD),
            model=replace(model, maxpool=True, patch_size=12),
            train_splits=("train", "unlabeled"),
        ),
        "imagenette-128": imagenet_like(128),
        "imagenette-224": imagenet_like(224),
    }
