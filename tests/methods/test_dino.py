import copy

import torch

from fastssl.config import OptimConfig
from fastssl.losses.dino import dino_loss
from fastssl.methods.base import Progress
from fastssl.methods.dino import DINO, DINOConfig
from fastssl.models.resnet import build_backbone
from fastssl.train.schedule import cosine_ramp
from tests.methods.common import batch

K = 10


def at(epoch, step=0):
    return Progress(epoch=epoch, step=step, steps_per_epoch=4, epochs=10)


def small_dino(**overrides):
    settings = dict(prototypes=K, proj_hidden=16, proj_dim=8, teacher_temperature_warmup_epochs=4)
    backbone = build_backbone("resnet18", True, False, 4, "bn", 1)
    return DINO(DINOConfig(**{**settings, **overrides}), backbone).to(memory_format=torch.channels_last)


def test_teacher_gets_no_gradient():
    torch.manual_seed(0)
    method = small_dino()
    method.before_step(at(1))
    method(batch(local_crops=2)).loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    assert all(p.grad is not None for p in method.student.parameters())


def test_loss_compares_teacher_global_views_with_every_student_view():
    for local_crops in (0, 2):
        torch.manual_seed(0)
        method = small_dino()
        method.before_step(at(0))
        b = batch(local_crops=local_crops)
        center = method.center.clone()  # the loss's, before the forward pass moves it
        loss = method(b).loss
        student = [method.student(b.views["global"]).prediction]
        if local_crops:
            student.append(method.student(b.views["local"]).prediction)
        teacher = method.teacher(b.views["global"]).prediction.view(2, 4, K)
        expected = dino_loss(torch.cat(student).view(-1, 4, K), teacher, center, 0.1, 0.04)
        torch.testing.assert_close(loss, expected)


def test_teacher_temperature_warms_up_linearly_per_epoch():
    method = small_dino()  # 0.04 → 0.07 over 4 epochs: linspace(0.04, 0.07, 4), then 0.07
    for epoch, expected in ((0, 0.04), (1, 0.05), (2, 0.06), (3, 0.07), (7, 0.07)):
        method.before_step(at(epoch, step=2))
        assert abs(method.teacher_temperature.item() - expected) < 1e-7


def test_centre_follows_the_mean_teacher_output_and_teacher_follows_by_ema():
    torch.manual_seed(0)
    method = small_dino()
    for step in range(2):
        progress = at(0, step)
        method.before_step(progress)
        b = batch(seed=step)
        center = method.center.clone()
        method(b)  # the centre moves once the loss has used it, as the official DINOLoss does
        teacher_outputs = method.teacher(b.views["global"]).prediction
        torch.testing.assert_close(method.center, 0.9 * center + 0.1 * teacher_outputs.mean(0))
        with torch.no_grad():
            for p in method.student.parameters():
                p.add_(0.1)  # as if the optimiser had stepped
        before = copy.deepcopy(method.teacher.network)
        method.after_optimizer_step(progress)
        m = cosine_ramp(0.9995, 1.0, progress.fraction)
        assert abs(method.teacher.momentum.item() - m) < 1e-7
        for t, t0, s in zip(method.teacher.network.parameters(), before.parameters(), method.student.parameters(),
                            strict=True):
            torch.testing.assert_close(t, m * t0 + (1 - m) * s)
    assert method.center.abs().sum() > 0


def test_last_layer_is_frozen_in_the_first_epoch_only():
    torch.manual_seed(0)
    method = small_dino()
    for epoch, frozen in ((0, True), (1, False)):
        method.zero_grad(set_to_none=True)
        method.before_step(at(epoch))
        method(batch(local_crops=2)).loss.backward()
        method.after_backward()
        for name, p in method.student.named_parameters():
            assert (p.grad is None) == (frozen and name == "prototypes.weight"), (epoch, name)


def test_adamw_leaves_biases_and_norms_undecayed():
    method = small_dino()
    decayed, undecayed = method.param_groups(OptimConfig(optimizer="adamw", weight_decay=0.04))
    assert decayed["weight_decay"] == 0.04 and undecayed["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in undecayed["params"])
    assert len(decayed["params"]) + len(undecayed["params"]) == len(list(method.student.parameters()))
