import torch

from fastssl.losses.infonce import queue_info_nce
from fastssl.losses.relational import sce_loss
from fastssl.methods.sce import SCE, SCEConfig
from tests.methods.common import batch, tiny_backbone


def small_sce(**overrides):
    cfg = SCEConfig(memory_size=12, proj_hidden=16, proj_dim=8, **overrides)
    backbone = tiny_backbone()
    return SCE(cfg, backbone).to(memory_format=torch.channels_last).eval()  # eval: shuffling changes nothing



def embeddings(method, b):
    strong, weak = b.views["global"].chunk(2)
    return (method.student(strong).projection, method.student(weak).projection,
            method.teacher(strong).projection, method.teacher(weak).projection)


def test_symmetric_loss_is_the_mean_of_directions_against_the_same_memory():
    torch.manual_seed(0)
    method, b = small_sce(), batch()
    q_strong, q_weak, k_strong, k_weak = embeddings(method, b)
    memory = method.memory.features.clone()
    one_way = sce_loss(q_strong, k_weak, memory, 0.1, 0.05, 0.5)
    other_way = sce_loss(q_weak, k_strong, memory, 0.1, 0.05, 0.5)
    out = method(b)
    torch.testing.assert_close(out.loss, 0.5 * (one_way + other_way))
    assert out.features.shape[0] == 8  # both views through the student
    # Only the weak (second) view's teacher embeddings go to the memory, after the step.
    torch.testing.assert_close(method.memory.features, memory)
    method.push_memories(out)
    torch.testing.assert_close(method.memory.features[:4], torch.nn.functional.normalize(k_weak, dim=1))


def test_one_hot_target_makes_it_moco():
    torch.manual_seed(0)
    method, b = small_sce(coefficient=1.0, symmetric=False), batch()
    q_strong, _, _, k_weak = embeddings(method, b)
    expected = queue_info_nce(q_strong, k_weak, method.memory.features, 0.1, "plain")
    torch.testing.assert_close(method(b).loss, expected)


def test_teacher_gets_no_gradient():
    torch.manual_seed(0)
    method = small_sce().train()
    method(batch()).loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is not None for p in method.student.parameters())
