import torch
import torch.nn.functional as F

from fastssl.losses.swav import sinkhorn_knopp, swapped_prediction
from fastssl.methods.base import Progress
from fastssl.methods.swav import SwAV, SwAVConfig
from fastssl.models.resnet import build_backbone
from tests.methods.common import batch

K = 6


def at_epoch(epoch):
    return Progress(epoch=epoch, step=0, steps_per_epoch=4, epochs=10)


def small_swav(**overrides):
    settings = dict(prototypes=K, proj_hidden=16, proj_dim=8, queue_size=12, queue_start_epoch=2,
                    freeze_prototypes_epochs=1)
    backbone = build_backbone("resnet18", True, False, 4, "bn", 1)
    return SwAV(SwAVConfig(**{**settings, **overrides}), backbone).to(memory_format=torch.channels_last)



def test_prototypes_score_cosines_and_are_renormalised_in_place_only_when_asked():
    torch.manual_seed(0)
    for renormalize in (False, True):
        method = small_swav(renormalize_prototypes=renormalize)
        with torch.no_grad():
            method.student.prototypes.weight.mul_(3.0)
        before = method.student.prototypes.weight.norm(dim=1)
        method.before_step(at_epoch(0))
        norms = method.student.prototypes.weight.norm(dim=1)
        # solo-learn's weight_norm (default): V keeps its norm; the SwAV authors put V back on the sphere
        torch.testing.assert_close(norms, torch.ones(K) if renormalize else before)
        encoded = method.student(batch().views["global"])
        torch.testing.assert_close(encoded.projection.norm(dim=1), torch.ones(8))
        unit_prototypes = method.student.prototypes.weight / norms[:, None]
        torch.testing.assert_close(encoded.prediction, encoded.projection @ unit_prototypes.T)


def test_prototype_gradients_are_dropped_in_the_first_epochs_only():
    torch.manual_seed(0)
    method = small_swav(freeze_prototypes_epochs=2)
    for epoch, frozen in ((0, True), (1, True), (2, False)):
        method.zero_grad(set_to_none=True)
        method.before_step(at_epoch(epoch))
        method(batch()).loss.backward()
        method.after_backward()
        for name, p in method.student.named_parameters():
            if name == "prototypes.weight":
                assert (p.grad is None) == frozen, (epoch, name)
            else:
                assert p.grad is not None, (epoch, name)


def test_loss_is_the_swapped_prediction_of_every_view_from_the_global_views_codes():
    for local_crops in (0, 2):
        torch.manual_seed(0)
        method = small_swav()
        method.before_step(at_epoch(0))
        b = batch(local_crops=local_crops)
        loss = method(b).loss
        scores = [method.student(b.views["global"]).prediction]
        if local_crops:
            scores.append(method.student(b.views["local"]).prediction)
        scores = torch.cat(scores).view(-1, 4, K)
        assert scores.shape[0] == 2 + local_crops
        codes = torch.stack([sinkhorn_knopp(scores[v].detach(), 0.05, 3) for v in range(2)])
        torch.testing.assert_close(loss, swapped_prediction(scores, codes, 0.1))


def test_queue_stores_each_views_projections_and_joins_the_codes_from_its_epoch():
    torch.manual_seed(0)
    method = small_swav()
    for step in range(4):  # 4 projections per view and step into 12 slots
        method.before_step(at_epoch(0))
        out = method(batch(seed=step))
        z1, z2 = out.enqueue["queues.0"], out.enqueue["queues.1"]
        pointer = int(method.queues[0].pointer)
        method.push_memories(out)  # as the step does after the optimiser
        slots = (torch.arange(4) + pointer) % 12
        torch.testing.assert_close(method.queues[0].features[slots], F.normalize(z1, dim=1))
        torch.testing.assert_close(method.queues[1].features[slots], F.normalize(z2, dim=1))
    scores = torch.randn(2, 4, K)
    method.before_step(at_epoch(1))  # before queue_start_epoch: the batch alone
    torch.testing.assert_close(method.assign(scores), torch.stack([sinkhorn_knopp(s) for s in scores]))
    method.before_step(at_epoch(2))
    with_queue = []
    for view in range(2):
        stored = method.student.prototypes(method.queues[view].features)
        with_queue.append(sinkhorn_knopp(torch.cat([scores[view], stored]))[:4])
    torch.testing.assert_close(method.assign(scores), torch.stack(with_queue))


def test_no_queue_when_its_size_is_zero():
    torch.manual_seed(0)
    method = small_swav(queue_size=0)
    method.before_step(at_epoch(5))
    assert len(method.queues) == 0
    out = method(batch())
    out.loss.backward()
    assert out.enqueue == {}
    method.push_memories(out)
