"""What the method tests share: random views in the ViewBatch layout and a tiny backbone."""

import copy

import torch

from fastssl.methods.base import Progress
from fastssl.methods.memory import FeatureQueue
from fastssl.models.resnet import ResNet, build_backbone
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
