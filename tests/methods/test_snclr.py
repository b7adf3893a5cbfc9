import dataclasses

import torch
import torch.nn.functional as F

from fastssl.losses.neighbours import nearest_neighbours, snclr_loss
from fastssl.methods.base import Progress
from fastssl.methods.snclr import SNCLR, SNCLRConfig
from tests.methods.common import (
    assert_ema_in_before_step,
    assert_only_the_student_learns,
    batch,
    swapped,
    tiny_backbone,
)

PROGRESS = Progress(epoch=0, step=0, steps_per_epoch=1, epochs=1)


def small_snclr(**overrides):
    cfg = SNCLRConfig(memory_size=12, proj_hidden=16, proj_dim=8, pred_hidden=16, top_k=3, **overrides)
    backbone = tiny_backbone()
    return SNCLR(cfg, backbone).to(memory_format=torch.channels_last)




def test_only_the_student_learns_and_the_teacher_follows_by_ema_before_the_step():
    torch.manual_seed(0)
    method = small_snclr()
    assert_only_the_student_learns(method, batch())
    assert method.teacher.network.predictor is None and set(method.monitored_backbones()) == {"student", "teacher"}
    assert_ema_in_before_step(method, PROGRESS, 0.99)


def test_one_views_prediction_and_projection_meet_the_other_views_target_and_neighbours():
    torch.manual_seed(0)
    method = small_snclr(symmetric=False)
    method.eval()
    b = batch()
    encoded = method.student(b.views["global"])
    z, p = encoded.projection, encoded.prediction
    t2 = method.teacher(b.views["global"]).projection.chunk(2)[1]
    _, neighbours = nearest_neighbours(t2, method.memory.features, 3)
    candidates = torch.cat([t2[:, None], neighbours], 1)
    expected = snclr_loss(p.chunk(2)[0], z.chunk(2)[0], candidates, 0.2)
    torch.testing.assert_close(method(b).loss, expected)


def test_memory_takes_second_view_targets_after_the_step_and_wraps():
    torch.manual_seed(0)
    method = small_snclr(shuffle_bn=False)
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
    method = small_snclr()
    method.eval()
    b = batch()
    symmetric = method(b).loss
    method.cfg = dataclasses.replace(method.cfg, symmetric=False)
    torch.testing.assert_close(symmetric, 0.5 * (method(b).loss + method(swapped(b)).loss))
