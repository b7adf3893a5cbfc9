import torch
import torch.nn.functional as F

from fastssl.config import OptimConfig
from fastssl.methods.simsiam import SimSiam, SimSiamConfig
from fastssl.train.optim import build_optimizer
from tests.methods.common import batch, tiny_backbone


def small_simsiam(**overrides):
    cfg = SimSiamConfig(proj_hidden=16, proj_dim=16, pred_hidden=4, **overrides)
    backbone = tiny_backbone()
    return SimSiam(cfg, backbone).to(memory_format=torch.channels_last)



def test_predictor_groups_carry_fixed_lr():
    method = small_simsiam()
    predictor = {id(p) for p in method.student.predictor.parameters()}
    for optimizer in ("sgd", "lars"):
        cfg = OptimConfig(optimizer=optimizer)
        groups = method.param_groups(cfg)
        seen = [id(p) for g in groups for p in g["params"]]
        assert sorted(seen) == sorted(id(p) for p in method.student.parameters())  # each exactly once
        for group in groups:
            in_predictor = {id(p) in predictor for p in group["params"]}
            assert len(in_predictor) == 1  # a group is all predictor or all encoder
            assert group.get("fixed_lr", False) == in_predictor.pop()
        flags = [g.get("fixed_lr", False) for g in build_optimizer(groups, cfg).param_groups]
        assert flags == [g.get("fixed_lr", False) for g in groups] and any(flags)  # what the loop reads
    decayed = small_simsiam(predictor_fixed_lr=False).param_groups(OptimConfig())
    assert not any(g.get("fixed_lr", False) for g in decayed)


def test_heads_follow_the_paper():
    method = small_simsiam()
    last = method.student.projector[-1]
    assert isinstance(last, torch.nn.BatchNorm1d) and not last.affine  # BN on the output, no affine
    assert isinstance(method.student.predictor[-1], torch.nn.Linear)  # no BN or ReLU on p
    assert method.teacher is None and set(method.monitored_backbones()) == {"student"}


def test_gradient_reaches_the_projection_only_through_the_prediction():
    torch.manual_seed(0)
    method = small_simsiam()
    captured = {}
    method.student.projector.register_forward_hook(lambda module, args, out: captured.update(z=out))
    method.student.predictor.register_forward_hook(lambda module, args, out: captured.update(p=out))
    loss = method(batch()).loss
    z, p = captured["z"], captured["p"]
    dz, dp = torch.autograd.grad(loss, [z, p], retain_graph=True)
    (dz_through_p,) = torch.autograd.grad(p, z, grad_outputs=dp)
    assert dz.abs().sum() > 0
    torch.testing.assert_close(dz, dz_through_p)  # no direct path z → loss: the stop-gradient


def test_symmetric_loss_is_mean_of_directions():
    torch.manual_seed(0)
    method = small_simsiam()
    method.eval()
    b = batch()
    out = method.student(b.views["global"])
    (z1, z2), (p1, p2) = out.projection.chunk(2), out.prediction.chunk(2)

    def d(p, z):  # Eq. 1, averaged over images
        return -(F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(1).mean()

    torch.testing.assert_close(method(b).loss, 0.5 * d(p1, z2) + 0.5 * d(p2, z1))
