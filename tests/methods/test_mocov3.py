import copy
import math

import torch

from fastssl.methods import mocov3
from fastssl.methods.base import Progress
from fastssl.methods.mocov3 import MoCoV3, MoCoV3Config
from tests.methods.common import batch, tiny_backbone


def small_mocov3(**overrides):
    cfg = MoCoV3Config(proj_hidden=16, proj_dim=8, pred_hidden=16, **overrides)
    backbone = tiny_backbone()
    return MoCoV3(cfg, backbone).to(memory_format=torch.channels_last)



def at(step, steps=10):
    return Progress(epoch=0, step=step, steps_per_epoch=steps, epochs=1)


def ctr(q, keys, tau, offset=0):
    """The paper's Algorithm 1, ctr(q, k) = 2τ·CE(q·kᵀ/τ, positives at i + offset), one
    query at a time, on unit vectors."""
    total = 0.0
    for i in range(len(q)):
        logits = [float(q[i] @ k) / (float(q[i].norm()) * float(k.norm())) / tau for k in keys]
        total += -(logits[i + offset] - math.log(sum(math.exp(x) for x in logits)))
    return 2 * tau * total / len(q)


def test_teacher_has_no_predictor_and_gets_no_gradient():
    torch.manual_seed(0)
    method = small_mocov3()
    assert method.teacher.network.predictor is None and method.student.predictor is not None
    method(batch()).loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is not None for p in method.student.parameters())
    assert set(method.monitored_backbones()) == {"student", "teacher"}


def test_momentum_rises_along_the_cosine_and_drives_the_ema():
    torch.manual_seed(0)
    method = small_mocov3()
    for step in (0, 2, 5, 9):
        method.before_step(at(step))
        expected = 1 - 0.5 * (1 + math.cos(math.pi * step / 10)) * (1 - 0.99)  # the authors' adjust_moco_momentum
        assert abs(float(method.teacher.momentum) - expected) < 1e-7
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    before = copy.deepcopy(method.teacher.network)
    method.before_step(at(2))
    m = float(method.teacher.momentum)
    student = dict(method.student.named_parameters())
    for (name, t), t0 in zip(method.teacher.network.named_parameters(), before.parameters(), strict=True):
        torch.testing.assert_close(t, m * t0 + (1 - m) * student[name])


def test_loss_is_the_sum_of_both_directions_scaled_by_two_tau():
    torch.manual_seed(0)
    method = small_mocov3(temperature=0.5)
    method.eval()
    b = batch()
    images = b.views["global"]
    q1, q2 = method.student(images).prediction.detach().chunk(2)
    k1, k2 = method.teacher(images).projection.chunk(2)
    expected = ctr(q1, k2, 0.5) + ctr(q2, k1, 0.5)  # Algorithm 1: symmetrised by a sum
    assert abs(method(b).loss.item() - expected) < 1e-5


def test_keys_of_every_process_with_positives_at_the_rank_offset(monkeypatch):
    g = torch.Generator().manual_seed(1)
    q, k, other = (torch.randn(3, 5, generator=g) for _ in range(3))
    monkeypatch.setattr(mocov3, "gather", lambda keys: torch.cat([other, keys]))  # this process is rank 1 of 2
    monkeypatch.setattr(mocov3, "rank", lambda: 1)
    expected = ctr(q, torch.cat([other, k]), 0.2, offset=3)
    for backend in ("plain", "chunked"):
        method = small_mocov3(loss_backend=backend)
        assert abs(method.contrastive(q, k).item() - expected) < 1e-5


def test_vit_heads_as_the_authors():
    method = small_mocov3(proj_layers=3, pred_last_bn=True)
    projector, predictor = method.student.projector, method.student.predictor
    assert [m.out_features for m in projector if isinstance(m, torch.nn.Linear)] == [16, 16, 8]
    assert all(not m.bias for m in (*projector, *predictor) if isinstance(m, torch.nn.Linear))
    for head in (projector, predictor):
        assert isinstance(head[-1], torch.nn.BatchNorm1d) and not head[-1].affine
    assert isinstance(small_mocov3().student.predictor[-1], torch.nn.Linear)  # ResNet: no BN on the output
