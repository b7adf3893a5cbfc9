import copy
import math

import torch
import torch.nn.functional as F

from fastssl.methods.base import Progress
from fastssl.methods.byol import BYOL, BYOLConfig
from pipelines.batch import ViewBatch
from tests.methods.common import batch, tiny_backbone


def small_byol(**overrides):
    cfg = BYOLConfig(proj_hidden=16, proj_dim=8, pred_hidden=16, **overrides)
    backbone = tiny_backbone()
    return BYOL(cfg, backbone).to(memory_format=torch.channels_last)



def at(step, steps=10):
    return Progress(epoch=0, step=step, steps_per_epoch=steps, epochs=1)


def test_target_has_no_predictor_and_gets_no_gradient():
    torch.manual_seed(0)
    method = small_byol()
    assert method.teacher.network.predictor is None and method.student.predictor is not None
    method(batch()).loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is not None for p in method.student.parameters())


def test_momentum_rises_along_the_cosine_and_drives_the_ema():
    torch.manual_seed(0)
    method = small_byol(momentum_final=1.0)  # the paper's schedule (--preset cifar10-paper)
    for step in (0, 3, 5, 9):
        method.before_step(at(step))
        expected = 1 - (1 - 0.99) * (math.cos(math.pi * step / 10) + 1) / 2  # BYOL §3.3
        assert abs(float(method.teacher.momentum) - expected) < 1e-7
    assert abs(float(method(batch()).metrics["ema_momentum"]) - expected) < 1e-7
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    before = copy.deepcopy(method.teacher.network)
    method.before_step(at(5))
    m = float(method.teacher.momentum)
    assert abs(m - 0.995) < 1e-7
    student = dict(method.student.named_parameters())
    for (name, t), t0 in zip(method.teacher.network.named_parameters(), before.parameters(), strict=True):
        torch.testing.assert_close(t, m * t0 + (1 - m) * student[name])


def test_final_momentum_equal_to_base_keeps_it_constant():
    method = small_byol()  # Mini-SSL's constant τ
    for step in (0, 4, 9):
        method.before_step(at(step))
        assert abs(float(method.teacher.momentum) - 0.99) < 1e-7


def test_symmetric_loss_is_mean_of_directions():
    torch.manual_seed(0)
    method = small_byol()
    method.eval()  # BN from running statistics: every call computes the same function
    b = batch()
    images = b.views["global"]
    predictions = method.student(images).prediction
    targets = method.teacher(images).projection

    def one_way(p, z):  # Eq. 2, averaged over images
        return ((F.normalize(p, dim=1) - F.normalize(z, dim=1)) ** 2).sum(1).mean()

    (p1, p2), (z1, z2) = predictions.chunk(2), targets.chunk(2)
    torch.testing.assert_close(method(b).loss, 0.5 * (one_way(p1, z2) + one_way(p2, z1)))
    swapped = ViewBatch({"global": torch.cat(images.chunk(2)[::-1])}, b.indices, b.labels, {})
    torch.testing.assert_close(method(swapped).loss, method(b).loss)
