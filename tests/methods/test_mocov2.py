
import torch

from fastssl.methods.base import Progress
from fastssl.methods.mocov2 import MoCoV2, MoCoV2Config
from pipelines.batch import ViewBatch
from tests.methods.common import assert_ema_in_before_step, assert_only_the_student_learns, batch, tiny_backbone

PROGRESS = Progress(epoch=0, step=0, steps_per_epoch=1, epochs=1)


def small_moco(**overrides):
    cfg = MoCoV2Config(queue_size=12, proj_hidden=16, proj_dim=8, **overrides)
    backbone = tiny_backbone()
    return MoCoV2(cfg, backbone).to(memory_format=torch.channels_last)



def test_teacher_gets_no_gradient_and_follows_by_ema():
    torch.manual_seed(0)
    method = small_moco()
    assert_only_the_student_learns(method, batch(), memories_searched=False)
    assert_ema_in_before_step(method, PROGRESS, 0.99)


def test_queue_takes_second_view_keys_and_wraps():
    torch.manual_seed(0)
    method = small_moco()
    for step in range(4):  # 4 keys per step into 12 slots: the pointer wraps after 3 steps
        out = method(batch(seed=step))
        new_keys = out.enqueue["queue"]
        pointer = int(method.queue.pointer)
        method.push_memories(out)  # as the step does after the optimiser
        slots = (torch.arange(4) + pointer) % 12
        torch.testing.assert_close(method.queue.features[slots], torch.nn.functional.normalize(new_keys, dim=1))
    assert int(method.queue.pointer) == 16 % 12
    torch.testing.assert_close(method.queue.features.norm(dim=1), torch.ones(12))


def test_shuffled_keys_equal_unshuffled_keys_without_batch_statistics():
    torch.manual_seed(0)
    method = small_moco()
    method.eval()  # BN from running statistics: shuffling must then change nothing
    images = batch().views["global"]
    shuffled = method.teacher.projections(images, 2, shuffle_bn=True)
    plain = method.teacher(images).projection
    torch.testing.assert_close(shuffled, plain)


def test_symmetric_loss_is_mean_of_directions():
    torch.manual_seed(0)
    method = small_moco()
    method.eval()
    b = batch()
    symmetric = method(b).loss
    method.cfg = MoCoV2Config(queue_size=12, proj_hidden=16, proj_dim=8, symmetric=False, shuffle_bn=False)
    one_way = method(b).loss
    swapped = ViewBatch({"global": torch.cat(b.views["global"].chunk(2)[::-1])}, b.indices, b.labels, {})
    other_way = method(swapped).loss
    torch.testing.assert_close(symmetric, 0.5 * (one_way + other_way))
