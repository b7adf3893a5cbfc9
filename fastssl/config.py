"""Configuration: nested frozen dataclasses, every field overridable from the command line
(``--optim.batch-size 512``), units in the names or the comments, and their JSON form.

``TrainConfig[M]`` is a run: the data set, the method's own settings ``M``, the views, the
backbone, the optimiser and the run's bookkeeping. Recipes whose views are not two of one
kind use a subclass that adds the other views' settings and says how the views group by
resolution (``view_groups``). A recipe's defaults and presets are declared with its method
(``fastssl.recipes``); this module knows no recipe.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pipelines.spec import ViewConfig, weak_view

M = TypeVar("M")


@dataclass(frozen=True)
class ModelConfig:
    arch: Literal["resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
                  "vit_tiny", "vit_small"] = "resnet18"
    """ResNets from torchvision's blocks; MobileNets and EfficientNet-B0 from torchvision's models (distillation
    students; torchvision's widths); ViTs from timm (the [vit] extra)."""
    patch_size: int = 4  # ViT patch side in pixels (4 for 32 px images, 16 for 224 px)
    cifar_stem: bool = True  # ResNet conv1 3×3 at stride 1 (Mini-SSL, for 32–64 px images); else 7×7 at stride 2
    maxpool: bool = False  # ResNet stem max-pool: dropped for CIFAR, kept for Tiny-ImageNet (Mini-SSL)
    width: int = 64  # channels of the first ResNet stage (64 in the paper and torchvision)
    norm: Literal["bn", "split_bn", "sync_bn"] = "split_bn"
    """The backbone's batch norm: split_bn (groups of a fixed size, as on bn_splits devices); bn or sync_bn (over
    the global batch, synchronised when there are several processes)."""
    bn_splits: int = 8
    """Split-BN groups per view of the global batch, shared out over processes (Mini-SSL: 8 of 32 images)."""
    zero_init_residual: bool = False  # ResNet: each residual branch's last BN starts at γ = 0 (VICRegL's authors)
    joint_views: bool = False
    """One network call over both views (faster on a GPU; the heads' BN then pools the views and the running
    statistics move once per step) instead of one per view, as Mini-SSL and solo-learn call it."""


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 200  # training epochs (Mini-SSL's CIFAR budget)
    batch_size: int = 256  # global: summed over processes
    optimizer: Literal["sgd", "lars", "adamw"] = "sgd"  # Mini-SSL: SGD; solo-learn's CIFAR LARS recipes
    lr_per_256: float = 0.06  # peak lr at batch 256, scaled to batch_size by lr_scaling (Mini-SSL)
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"
    """Linear: lr_per_256 × batch/256 (Goyal et al.); sqrt: × √(batch/256); none: as given."""
    momentum: float = 0.9  # SGD/LARS momentum; AdamW β1
    weight_decay: float = 5e-4  # Mini-SSL: on every parameter, BN and biases included
    lars_eta: float = 0.02  # LARS trust coefficient η (You et al., 2017; solo-learn)
    lars_exclude_bias_and_norm: bool = True
    """LARS: biases and norm parameters get no adaptation and no decay (solo-learn)."""
    warmup_epochs: float = 5.0  # linear warm-up, then the schedule, per step (Mini-SSL)
    warmup_start_lr: float = 0.0  # the warm-up's first lr, not scaled (Mini-SSL: 0; solo-learn: 3e-5)
    schedule: Literal["cosine", "constant"] = "cosine"  # after warm-up: cosine to 0 (Mini-SSL), or the peak lr
    accumulate_steps: int = 1
    """Gradient accumulation over micro-batches; refused for batch-dependent losses (all current methods)."""
    probe_lr: float = 0.1  # online linear probe: SGD momentum 0.9, no decay (solo-learn)

    @property
    def lr(self) -> float:
        ratio = self.batch_size / 256
        return self.lr_per_256 * {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[self.lr_scaling]


@dataclass(frozen=True)
class RunConfig:
    name: str = ""  # run folder under out_dir; empty: <recipe>-<data set folder>
    out_dir: Path = Path("runs")  # where run folders are made
    seed: int = 1339  # Mini-SSL's seed
    knn_every_epochs: int = 5  # kNN monitor period in epochs (also after the last epoch)
    knn_k: int = 200  # neighbours of the weighted kNN monitor (Mini-SSL)
    knn_temperature: float = 0.1  # temperature of the kNN monitor's vote weights (Mini-SSL)
    knn_before_training: bool = True  # evaluate the untrained network too
    eval_batch_size: int = 1024  # images per forward when extracting features
    log_every_steps: int = 20  # metrics are read from the device only this often
    checkpoint_every_epochs: int = 1  # epochs between checkpoints (also after the last)
    keep_checkpoints: int = 2  # newest checkpoints kept (checkpoint.pt, checkpoint.1.pt, …), besides best.pt
    best_network: Literal["student", "teacher"] = "student"  # whose kNN accuracy picks best.pt
    stop_signals: tuple[str, ...] = ("SIGTERM", "SIGINT", "SIGUSR2")  # signals that stop the run with a checkpoint
    stop_after_steps: int | None = None  # leave early (with a checkpoint) after this many steps
    stop_after_minutes: float | None = None  # likewise after this much wall-clock time
    progress_bar: bool = True  # a tqdm bar per epoch
    deterministic: bool = False  # deterministic kernels (slower), for bit-reproducible runs
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Auto: bf16 autocast on CUDA, fp32 on the CPU (where bf16 is 15–25× slower)."""
    channels_last: bool = True  # weights and views in channels-last memory
    compile: bool | None = None  # torch.compile the student and teacher networks (None: on with CUDA)
    cuda_graphs: bool | None = None  # with compile: capture the networks as CUDA graphs (None: on with CUDA)
    fused_optimizer: bool | None = None  # torch's fused SGD/AdamW kernels (None: on with CUDA)
    fused_views: bool | None = None  # all augmentations of ≤ 64 px views in one Triton launch (None: on with CUDA)
    trackers: tuple[Literal["tensorboard", "wandb", "mlflow", "aim"], ...] = ()
    """Experiment trackers that also get the metrics, through accelerate's tracker API (W&B offline with
    WANDB_MODE=offline); each needs its package installed."""


@dataclass(frozen=True)
class TrainConfig(Generic[M]):
    """A training run: two views of one kind per image (``views``) unless a subclass adds more."""

    data: Path  # a data set converted by tools/convert.py
    method: M  # the method's own settings
    data_verify: Literal["full", "quick", "off"] = "quick"
    """Check --data against meta.json before training: full: every file's sha256; quick: every file's size,
    the .npy headers' shape and dtype, and 16 blocks of 64 KiB per file spread evenly from the first byte to
    the last (not what lies between them); off: nothing. A pass is remembered in $FASTSSL_CACHE_DIR
    (default ~/.cache/fastssl) until a file's size, mtime or inode changes."""
    train_splits: tuple[str, ...] = ("train",)
    """Splits trained on, concatenated (STL-10: train and unlabeled); the kNN bank is "train"."""
    eval_size: int | None = None
    """Side of the evaluation images (kNN monitor, probes): each image's centred square at this size; default
    the first view's size (Mini-SSL's STL-10: 64 px views, evaluated on the whole 96 px images). ResNets only."""
    upsampled_views: str = ""
    """Why views larger than the stored images are meant, when a preset means it (ImageNette v2-160, shorter
    side 160, at the study's 224 px): the loader's upsampling warning then says so instead of advising another
    preset."""
    views: ViewConfig = field(default_factory=ViewConfig)
    """The views of each image (the first view where there are several kinds)."""
    model: ModelConfig = field(default_factory=ModelConfig)  # the backbone
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimiser and schedule
    run: RunConfig = field(default_factory=RunConfig)  # logging, evaluation, stopping, speed switches

    def view_groups(self) -> dict[str, list[ViewConfig]]:
        """The views per resolution group, in the order a method reads them."""
        return {"global": [self.views, self.views]}


@dataclass(frozen=True)
class SecondViewTrainConfig(TrainConfig[M]):
    """Two views of one size, each with its own augmentation (BYOL's asymmetric pair)."""

    second_views: ViewConfig = field(default_factory=ViewConfig)  # the second view of each image

    def view_groups(self) -> dict[str, list[ViewConfig]]:
        return {"global": [self.views, self.second_views]}


@dataclass(frozen=True)
class SingleViewTrainConfig(TrainConfig[M]):
    """One view of each image, which a student and its frozen teacher both see (SEED,
    CompRess, SimReg)."""

    def view_groups(self) -> dict[str, list[ViewConfig]]:
        return {"global": [self.views]}


@dataclass(frozen=True)
class WeakViewTrainConfig(TrainConfig[M]):
    """A strong view (``views``) and a weak one for the teacher (ReSSL, MSF, SCE)."""

    weak_views: ViewConfig = field(default_factory=weak_view)  # the second, weak view of each image

    def view_groups(self) -> dict[str, list[ViewConfig]]:
        return {"global": [self.views, self.weak_views]}


@dataclass(frozen=True)
class LocalCropsTrainConfig(TrainConfig[M]):
    """Two global views of one kind and ``local_crops`` small ones (SwAV's multi-crop)."""

    local_views: ViewConfig = field(default_factory=ViewConfig)  # the small views
    local_crops: int = 0  # small views per image

    def view_groups(self) -> dict[str, list[ViewConfig]]:
        return {**super().view_groups(), **self._local()}

    def _local(self) -> dict[str, list[ViewConfig]]:
        return {"local": [self.local_views] * self.local_crops} if self.local_crops else {}


@dataclass(frozen=True)
class MultiCropTrainConfig(LocalCropsTrainConfig[M]):
    """Two global views of two kinds and small ones (DINO's multi-crop)."""

    second_views: ViewConfig = field(default_factory=ViewConfig)  # the second global view of each image

    def view_groups(self) -> dict[str, list[ViewConfig]]:
        return {"global": [self.views, self.second_views], **self._local()}


C = TypeVar("C", bound=TrainConfig)

# Settings that decide how a run is logged, evaluated, stopped and placed, and how fast its
# step runs, not what it trains (compile, CUDA graphs and the fused optimiser are tested to
# give the same losses; the memory format and the fused view kernel change only rounding):
# a resumed run may change them, and tools/report.py pools runs that differ only in these.
BOOKKEEPING = frozenset(f"run.{name}" for name in (
    "name", "out_dir", "knn_every_epochs", "knn_k", "knn_temperature", "knn_before_training", "eval_batch_size",
    "log_every_steps", "checkpoint_every_epochs", "keep_checkpoints", "best_network", "stop_signals",
    "stop_after_steps", "stop_after_minutes", "progress_bar",
    "trackers", "channels_last", "compile", "cuda_graphs", "fused_optimizer", "fused_views",
)) | {"data_verify", "eval_size", "upsampled_views"}


def validate(cfg: TrainConfig) -> list[str]:
    """``ConfigError`` naming the first option whose value cannot work (a size, count or
    period below 1, a probability outside [0, 1], a crop scale outside (0, 1]); otherwise
    the warnings for values that work but are probably not meant (a warm-up longer than
    the run)."""
    o, m, r = cfg.optim, cfg.model, cfg.run
    at_least_one = {"optim.epochs": o.epochs, "optim.batch-size": o.batch_size, "optim.accumulate-steps":
                    o.accumulate_steps, "model.width": m.width, "model.bn-splits": m.bn_splits, "model.patch-size":
                    m.patch_size, "run.eval-batch-size": r.eval_batch_size, "run.log-every-steps": r.log_every_steps,
                    "run.knn-every-epochs": r.knn_every_epochs, "run.knn-k": r.knn_k, "run.checkpoint-every-epochs":
                    r.checkpoint_every_epochs, "run.keep-checkpoints": r.keep_checkpoints}
    if r.stop_after_steps is not None:
        at_least_one["run.stop-after-steps"] = r.stop_after_steps
    for option, value in at_least_one.items():
        if value < 1:
            raise ConfigError(f"--{option} {value}: must be at least 1")
    positive: dict[str, float] = {"optim.lr-per-256": o.lr_per_256, "run.knn-temperature": r.knn_temperature}
    if r.stop_after_minutes is not None:
        positive["run.stop-after-minutes"] = r.stop_after_minutes
    for option, amount in positive.items():
        if not amount > 0:
            raise ConfigError(f"--{option} {amount}: must be positive")
    for option, amount in {"optim.warmup-epochs": o.warmup_epochs, "optim.weight-decay": o.weight_decay,
                           "optim.warmup-start-lr": o.warmup_start_lr}.items():
        if amount < 0:
            raise ConfigError(f"--{option} {amount}: must not be negative")
    for name in view_fields(cfg):
        view, flag = getattr(cfg, name), "--" + name.replace("_", "-")
        if view.size < 1:
            raise ConfigError(f"{flag}.size {view.size}: must be at least 1")
        low, high = view.crop_scale
        if not 0 < low <= high <= 1:
            raise ConfigError(f"{flag}.crop-scale {low} {high}: must satisfy 0 < low ≤ high ≤ 1")
        for p in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p", "vflip_p", "rotate_p",
                  "local_rotation_p", "region_confusion_p"):
            if not 0 <= getattr(view, p) <= 1:
                raise ConfigError(f"{flag}.{p.replace('_', '-')} {getattr(view, p)}: a probability, in [0, 1]")
        if view.region_confusion_p > 0 and not 1 <= view.region_grid <= view.size:
            raise ConfigError(f"{flag}.region-grid {view.region_grid}: must be between 1 and the view's "
                              f"{view.size} px")
        if view.region_neighbourhood < 0:
            raise ConfigError(f"{flag}.region-neighbourhood {view.region_neighbourhood}: must not be negative")
    if cfg.eval_size is not None and (cfg.eval_size < 1 or (cfg.model.arch.startswith("vit")
                                                            and cfg.eval_size != cfg.views.size)):
        raise ConfigError(f"--eval-size {cfg.eval_size}: must be at least 1, and a ViT's its views' size "
                          f"({cfg.views.size})")
    if isinstance(cfg, LocalCropsTrainConfig) and cfg.local_crops < 0:
        raise ConfigError(f"--local-crops {cfg.local_crops}: must not be negative")
    for name in r.stop_signals:
        if name not in signal.Signals.__members__:
            raise ConfigError(f"--run.stop-signals {name}: not a signal (e.g. SIGTERM, SIGINT, SIGUSR2)")
    if o.warmup_epochs > o.epochs:
        return [f"--optim.warmup-epochs {o.warmup_epochs} is longer than the run's {o.epochs} epochs: "
                "the lr never reaches its peak"]
    return []


def view_fields(cfg: TrainConfig) -> list[str]:
    """The names of ``cfg``'s ``ViewConfig`` fields (``views``, ``second_views``, …)."""
    return [f.name for f in dataclasses.fields(cfg) if isinstance(getattr(cfg, f.name), ViewConfig)]


def with_views(cfg: C, **changes) -> C:
    """``cfg`` with ``changes`` made to every ``ViewConfig`` it holds. A ``size`` change
    scales every view by the same factor, so local crops keep their proportion to the
    global ones."""
    updates: dict[str, Any] = {}
    for name in view_fields(cfg):
        value: ViewConfig = getattr(cfg, name)
        view_changes = dict(changes)
        if "size" in changes:
            view_changes["size"] = round(value.size * changes["size"] / cfg.views.size)
        updates[name] = replace(value, **view_changes)
    return replace(cfg, **updates)


def with_changes(value: Any, changes: Mapping[str, Any]) -> Any:
    """``value`` (a dataclass) with ``changes``: a field → its new value, or, for a nested
    dataclass field, → a mapping of changes to it."""
    updates = {}
    for name, change in changes.items():
        current = getattr(value, name)
        nested = isinstance(change, Mapping) and dataclasses.is_dataclass(current)
        updates[name] = with_changes(current, change) if nested else change
    return replace(value, **updates)


# --- the JSON form (summary.json, checkpoints, config.yaml) ------------------------------


class ConfigError(ValueError):
    """Stored settings that do not fit the configuration they are read into."""


def to_json(value: Any) -> Any:
    """Plain JSON values of a configuration: dataclasses as objects, tuples as lists, paths
    as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    return value


def dotted(values: Any, prefix: str = "") -> dict[str, Any]:
    """A configuration's JSON form as dotted names → values (``{"optim": {"epochs": 3}}`` →
    ``{"optim.epochs": 3}``)."""
    if isinstance(values, Mapping):
        return {k: v for key, value in values.items() for k, v in dotted(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: values}


def from_json(cls: type[C] | type, values: Mapping[str, Any], method: type | None = None, where: str = "") -> Any:
    """The dataclass ``cls`` from its JSON form (``to_json``'s inverse): nested dataclasses,
    tuples, paths and optional values rebuilt from their field types; ``method`` is the
    type of a ``TrainConfig``'s method settings. A key ``cls`` lacks raises ``ConfigError``
    naming it; a missing key takes the field's default."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(where + k for k in unknown)}")
    kwargs = {}
    for name, value in values.items():
        kind = method if isinstance(hints[name], TypeVar) else hints[name]
        kwargs[name] = _typed(kind, value, f"{where}{name}.")
    return cls(**kwargs)


def _typed(kind: Any, value: Any, where: str) -> Any:
    """``value`` (JSON) as the field type ``kind``."""
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None:
            return None
        kind = next(a for a in arguments if a is not type(None))
        origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where[:-1]}: expected settings, got {value!r}")
        return from_json(typing.cast(type, kind), value, where=where)
    if origin is tuple:
        item = arguments[0]
        return tuple(_typed(item, v, where) for v in value)
    if origin is Literal and value not in arguments:
        raise ConfigError(f"{where[:-1]}: {value!r} is not one of {', '.join(map(repr, arguments))}")
    if kind is Path:
        return Path(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
