
import torch
import torch.nn.functional as F

from fastssl.losses.relational import ressl_loss
from fastssl.methods.base import Progress
from fastssl.methods.ressl import ReSSL, ReSSLConfig
from tests.methods.common import assert_ema_in_before_step, assert_only_the_student_learns, batch, tiny_backbone


def progress(step=0):
    return Progress(epoch=0, step=step, steps_per_epoch=4, epochs=1)


def small_ressl(**overrides):
    cfg = ReSSLConfig(memory_size=12, proj_hidden=16, proj_dim=8, **overrides)
    backbone = tiny_backbone()
    return ReSSL(cfg, backbone).to(memory_format=torch.channels_last)



def test_teacher_gets_no_gradient_and_follows_by_a_constant_ema():
    torch.manual_seed(0)
    method = small_ressl()
    assert_only_the_student_learns(method, batch())
    assert_ema_in_before_step(method, progress(step=3), 0.99)  # late in training: still 0.99


def test_student_sees_the_strong_view_and_teacher_the_weak_one():
    torch.manual_seed(0)
    method = small_ressl()
    method.eval()  # BN from running statistics: shuffling changes nothing
    b = batch()
    strong, weak = b.views["global"].chunk(2)
    out = method(b)
    expected = ressl_loss(method.student(strong).projection, method.teacher(weak).projection,
                          method.memory.features, 0.1, 0.04)
    torch.testing.assert_close(out.loss, expected)
    assert out.features.shape[0] == 4  # one view through the student
    torch.testing.assert_close(out.enqueue["memory"], method.teacher(weak).projection)


def test_memory_takes_the_weak_view_teacher_embeddings_and_wraps():
    torch.manual_seed(0)
    method = small_ressl()
    for step in range(4):  # 4 embeddings per step into 12 slots: the pointer wraps after 3 steps
        out = method(batch(seed=step))
        new_keys = out.enqueue["memory"]
        pointer = int(method.memory.pointer)
        method.push_memories(out)  # as the step does after the optimiser
        slots = (torch.arange(4) + pointer) % 12
        torch.testing.assert_close(method.memory.features[slots], F.normalize(new_keys, dim=1))
    assert int(method.memory.pointer) == 16 % 12


def test_symmetric_option_averages_the_two_directions():
    torch.manual_seed(0)
    method = small_ressl(symmetric=True)
    method.eval()
    b = batch()
    strong, weak = b.views["global"].chunk(2)
    memory = method.memory.features
    q_strong, q_weak = method.student(strong).projection, method.student(weak).projection
    k_strong, k_weak = method.teacher(strong).projection, method.teacher(weak).projection
    expected = 0.5 * (ressl_loss(q_strong, k_weak, memory, 0.1, 0.04) + ressl_loss(q_weak, k_strong, memory, 0.1, 0.04))
    torch.testing.assert_close(method(b).loss, expected)
