import dataclasses

import torch
import torch.nn.functional as F

from fastssl.losses.neighbours import msf_loss, nearest_neighbours
from fastssl.methods.base import Progress
from fastssl.methods.msf import MSF, MSFConfig
from tests.methods.common import (
    assert_ema_in_before_step,
    assert_only_the_student_learns,
    batch,
    swapped,
    tiny_backbone,
)

PROGRESS = Progress(epoch=0, step=0, steps_per_epoch=1, epochs=1)


def small_msf(**overrides):
    cfg = MSFConfig(memory_size=12, proj_hidden=16, proj_dim=8, pred_hidden=16, top_k=3, **overrides)
    backbone = tiny_backbone()
    return MSF(cfg, backbone).to(memory_format=torch.channels_last)




def test_only_the_student_learns_and_the_teacher_follows_by_ema_before_the_step():
    torch.manual_seed(0)
    method = small_msf()
    assert_only_the_student_learns(method, batch())
    assert method.teacher.network.predictor is None and set(method.monitored_backbones()) == {"student", "teacher"}
    assert_ema_in_before_step(method, PROGRESS, 0.99)


def test_prediction_of_the_strong_view_shifts_to_the_weak_targets_neighbours():
    torch.manual_seed(0)
    method = small_msf(symmetric=False)
    method.eval()
    b = batch()
    p1 = method.student(b.views["global"]).prediction.chunk(2)[0]
    t2 = method.teacher(b.views["global"]).projection.chunk(2)[1]
    _, neighbours = nearest_neighbours(t2, method.memory.features, 3)
    torch.testing.assert_close(method(b).loss, msf_loss(p1, t2, neighbours))


def test_shuffled_targets_equal_unshuffled_targets_without_batch_statistics():
    torch.manual_seed(0)
    method = small_msf()
    method.eval()  # BN from running statistics: shuffling must then change nothing
    images = batch().views["global"]
    shuffled = method.teacher.projections(images, 2, shuffle_bn=True)
    torch.testing.assert_close(shuffled, method.teacher(images).projection)


def test_memory_takes_second_view_targets_after_the_step_and_wraps():
    torch.manual_seed(0)
    method = small_msf(shuffle_bn=False)
    for step in range(4):  # 4 targets per step into 12 slots: the pointer wraps after 3 steps
        b = batch(seed=step)
        method.before_step(PROGRESS)
        before = method.memory.features.clone()
        out = method(b)
        torch.testing.assert_close(method.memory.features, before, rtol=0, atol=0)  # untouched until the step
        second_view = method.teacher(b.views["global"]).projection.chunk(2)[1]
        pointer = int(method.memory.pointer)
        method.push_memories(out)  # as the step does after the optimiser
        slots = (torch.arange(4) + pointer) % 12
        torch.testing.assert_close(method.memory.features[slots], F.normalize(second_view, dim=1))
    assert int(method.memory.pointer) == 16 % 12


def test_symmetric_loss_is_mean_of_directions():
    torch.manual_seed(0)
    method = small_msf()
    method.eval()
    b = batch()
    symmetric = method(b).loss
    method.cfg = dataclasses.replace(method.cfg, symmetric=False)
    torch.testing.assert_close(symmetric, 0.5 * (method(b).loss + method(swapped(b)).loss))
