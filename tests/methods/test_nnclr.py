import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fastssl.losses.neighbours import nearest_neighbours, nnclr_loss
from fastssl.methods.nnclr import NNCLR, NNCLRConfig
from tests.methods.common import batch, swapped, tiny_backbone


def small_nnclr(**overrides):
    cfg = NNCLRConfig(memory_size=12, proj_hidden=16, proj_dim=8, pred_hidden=16, **overrides)
    backbone = tiny_backbone()
    return NNCLR(cfg, backbone).to(memory_format=torch.channels_last)




def test_no_teacher_and_no_gradient_reaches_the_support_set():
    torch.manual_seed(0)
    method = small_nnclr()
    method.support.features.requires_grad_(True)  # were the search differentiable, a gradient would land here
    method(batch()).loss.backward()
    assert method.support.features.grad is None
    assert all(p.grad is not None for p in method.student.parameters())
    assert method.teacher is None and list(method.monitored_backbones()) == ["student"]


@pytest.mark.parametrize("top_k", [1, 5])
def test_prediction_of_one_view_takes_the_neighbours_of_the_other(top_k):
    torch.manual_seed(0)
    method = small_nnclr(top_k=top_k, symmetric=False)
    method.eval()
    b = batch()
    encoded = method.student(b.views["global"])
    z, p = encoded.projection, encoded.prediction
    _, neighbours = nearest_neighbours(z.chunk(2)[1], method.support.features, top_k)
    p1 = p.chunk(2)[0]
    torch.testing.assert_close(method(b).loss, nnclr_loss(p1, neighbours, p1, neighbours, 0.2))


def test_support_set_takes_second_view_projections_after_the_step_and_wraps():
    torch.manual_seed(0)
    method = small_nnclr()
    for step in range(4):  # 4 projections per step into 12 slots: the pointer wraps after 3 steps
        b = batch(seed=step)
        before = method.support.features.clone()
        out = method(b)
        torch.testing.assert_close(method.support.features, before, rtol=0, atol=0)  # untouched until the step
        second_view = method.student(b.views["global"]).projection.chunk(2)[1]
        pointer = int(method.support.pointer)
        method.push_memories(out)  # as the step does after the optimiser
        slots = (torch.arange(4) + pointer) % 12
        torch.testing.assert_close(method.support.features[slots], F.normalize(second_view, dim=1).detach())
    assert int(method.support.pointer) == 16 % 12


def test_symmetric_loss_is_mean_of_directions():
    torch.manual_seed(0)
    method = small_nnclr(top_k=3)
    method.eval()
    b = batch()
    symmetric = method(b).loss
    method.cfg = dataclasses.replace(method.cfg, symmetric=False)
    torch.testing.assert_close(symmetric, 0.5 * (method(b).loss + method(swapped(b)).loss))
