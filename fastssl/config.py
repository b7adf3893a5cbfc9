"""Configuration: nested frozen dataclasses, every field overridable from the command line
(``--optim.batch-size 512``). Units are in the names or the comments. A recipe adds its
``method`` field and cites where each default comes from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipelines.views import ViewConfig


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
