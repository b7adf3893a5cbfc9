"""What the method tests share: random views in the ViewBatch layout, a tiny backbone and
fastssl's own training step for the reference-step tests."""

import contextlib
import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from fastssl.config import OptimConfig, TrainConfig
from fastssl.eval.online import OnlineProbe
from fastssl.methods.base import Progress
from fastssl.methods.memory import FeatureQueue
from fastssl.models.resnet import ResNet, build_backbone
from fastssl.train.build import Parts
from fastssl.train.optim import build_optimizer
from fastssl.train.step import Meter, train_step
from pipelines.batch import ViewBatch


def batch(n: int = 4, seed: int = 0, local_crops: int = 0) -> ViewBatch:
    """n images: two 16 px global views of each (view-major) and ``local_crops`` 8 px ones."""
    g = torch.Generator().manual_seed(seed)

    def images(count: int, size: int) -> torch.Tensor:
        return torch.randn(count, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)

    views = {"global": images(2 * n, 16)}
    if local_crops:
        views["local"] = images(local_crops * n, 8)
    return ViewBatch(views, torch.arange(n), torch.zeros(n, dtype=torch.long), {})


def swapped(b: ViewBatch) -> ViewBatch:
    """The same batch with its two global views exchanged."""
    return ViewBatch({"global": torch.cat(b.views["global"].chunk(2)[::-1])}, b.indices, b.labels, {})


def tiny_backbone() -> ResNet:
    """ResNet-18 four channels wide, split-BN in groups of two images."""
    return build_backbone("resnet18", True, False, 4, "split_bn", 2)


def assert_only_the_student_learns(method, batch_: ViewBatch, memories_searched: bool = True) -> None:
    """Backward through ``method`` on a batch: every student parameter gets a gradient; the
    teacher gets none even were it to ask for one, and so do memories that are only
    searched without a gradient (``memories_searched``; MoCo's queue of negatives is a
    buffer, which never asks)."""
    method.teacher.requires_grad_(True)
    queues = [m.features for m in method.modules() if isinstance(m, FeatureQueue)]
    memories = queues if memories_searched else []
    for memory in memories:
        memory.requires_grad_(True)
    method(batch_).loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(memory.grad is None for memory in memories)
    assert all(p.grad is not None for p in method.student.parameters())


def assert_ema_in_before_step(method, progress: Progress, momentum: float) -> None:
    """After ``before_step`` the teacher is m·θ_teacher + (1 − m)·θ_student, by name."""
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    before = copy.deepcopy(method.teacher.network)
    method.before_step(progress)
    teacher, student = dict(method.teacher.network.named_parameters()), dict(method.student.named_parameters())
    for name, t0 in before.named_parameters():
        torch.testing.assert_close(teacher[name], momentum * t0 + (1 - momentum) * student[name])


def train_config(method, optim: OptimConfig) -> TrainConfig:
    """A run's configuration around ``method``'s settings and ``optim``, the rest defaults."""
    return TrainConfig(data=Path("unused"), method=method.cfg, optim=optim)


class Stepper:
    """fastssl's ``train_step`` for ``method`` under ``cfg`` (``build_optimizer`` over its
    ``param_groups``, the schedule over ``cfg.optim.epochs`` of ``steps_per_epoch``); a
    stand-in accelerator (no autocast, plain backward) and loader (its length only); the
    online probe as built, over ``classes``."""

    def __init__(self, name: str, method, cfg: TrainConfig, steps_per_epoch: int, classes: int = 2) -> None:
        optim = cfg.optim
        probe = OnlineProbe(method.backbone.feature_dim, classes).double()
        accelerator = SimpleNamespace(autocast=contextlib.nullcontext, backward=lambda loss: loss.backward())
        self.steps_per_epoch, self.epochs = steps_per_epoch, optim.epochs
        self.parts = Parts(cfg, name, accelerator, None, range(steps_per_epoch), method,  # type: ignore[arg-type]
                           build_optimizer(method.param_groups(optim), optim), probe, probe,
                           torch.optim.SGD(probe.parameters(), lr=optim.probe_lr, momentum=0.9), None)

    def progress(self, step: int) -> Progress:
        """Where training step ``step`` (from 0) is."""
        return Progress(step // self.steps_per_epoch, step % self.steps_per_epoch, self.steps_per_epoch, self.epochs)

    def __call__(self, batch: ViewBatch, step: int) -> torch.Tensor:
        """Training step ``step`` (from 0) on ``batch``; its loss."""
        return train_step(self.parts, batch, self.progress(step), Meter()).loss.detach()


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    """Mini-SSL's util/utils.py ``cosine_scheduler`` (80dd398), one lr per iteration: the
    warm-up along np.linspace over warmup_epochs·niter_per_ep, then a cosine."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule
