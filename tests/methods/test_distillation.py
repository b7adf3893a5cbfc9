"""The frozen teacher of the distillation recipes: loaded from a run, an export or a state
dict, checked against the architecture named, fed the student's views in its own size and
statistics, kept in eval mode, saved as a checksum; and what may be cached."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fastssl.methods.distillation import FrozenTeacher, TeacherConfig, load_teacher
from fastssl.models.resnet import ResNet
from fastssl.weights import CheckpointError, OutsideWeights, load_checkpoint, read_checkpoint
from pipelines.spec import ViewConfig


def test_a_run_teacher_embeds_by_its_own_projection_head(trained_checkpoint, tiny_dataset):
    loaded = load_teacher(TeacherConfig(teacher=trained_checkpoint.parent), tiny_dataset)
    backbone = load_checkpoint(trained_checkpoint).network
    state = read_checkpoint(trained_checkpoint)["method"]
    images = torch.randn(4, 3, 32, 32)
    features = backbone(images)
    # MoCo v2's projector: Linear, ReLU, Linear (Mini-SSL heads.py), its weights from the run.
    hidden = F.relu(F.linear(features, state["student.projector.0.weight"], state["student.projector.0.bias"]))
    expected = F.linear(hidden, state["student.projector.2.weight"], state["student.projector.2.bias"])
    with torch.no_grad():
        output = loaded.network(images)
    torch.testing.assert_close(output.features, features)
    torch.testing.assert_close(output.embedding, expected)
    assert loaded.description == "mocov2 run mocov2-tiny"


def test_the_teacher_stays_frozen_in_eval_mode_and_sees_the_student_views_in_its_own_terms(
        trained_checkpoint, tiny_dataset):
    loaded = load_teacher(TeacherConfig(teacher=trained_checkpoint), tiny_dataset)
    student_view = ViewConfig(size=24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    teacher = FrozenTeacher(loaded, student_view)
    teacher.train()
    assert not any(m.training for m in teacher.network.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    views = torch.randn(3, 3, 24, 24)
    pixels = views * 0.25 + 0.5  # what the student's normalisation came from
    resized = F.interpolate(pixels, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    mean, std = torch.tensor(loaded.views.mean).view(1, 3, 1, 1), torch.tensor(loaded.views.std).view(1, 3, 1, 1)
    torch.testing.assert_close(teacher.inputs(views), (resized - mean) / std)
    own = torch.randn(3, 3, 32, 32)
    assert FrozenTeacher(loaded, loaded.views).inputs(own) is own  # its own terms: nothing converted


def test_the_checkpoint_keeps_the_teacher_as_a_checksum_and_refuses_a_changed_teacher(
        trained_checkpoint, tiny_dataset):
    loaded = load_teacher(TeacherConfig(teacher=trained_checkpoint), tiny_dataset)
    teacher = FrozenTeacher(loaded, loaded.views)
    holder = torch.nn.Module()
    holder.teacher = teacher
    holder.head = torch.nn.Linear(2, 2)
    state = holder.state_dict()
    assert [k for k in state if k.startswith("teacher.")] == ["teacher.sha256"]
    assert bytes(state["teacher.sha256"].tolist()).hex() == loaded.sha256
    holder.load_state_dict(state)  # strict: the teacher's weights are not missing from it
    other = dataclasses.replace(loaded, sha256="00" * 32)
    holder.teacher = FrozenTeacher(other, loaded.views)
    with pytest.raises(CheckpointError, match="the teacher file changed since the run started"):
        holder.load_state_dict(state)


def test_a_teacher_of_another_architecture_is_refused_in_one_line(trained_checkpoint, tiny_dataset, tmp_path):
    named = TeacherConfig(teacher=trained_checkpoint, teacher_net=OutsideWeights(arch="resnet50"))
    with pytest.raises(CheckpointError, match="the teacher is a resnet18, not the --method.teacher-net.arch resnet50"):
        load_teacher(named, tiny_dataset)
    weights = tmp_path / "resnet18.pth"
    torch.save(ResNet("resnet18", cifar_stem=False, maxpool=True).state_dict(), weights)
    plain = TeacherConfig(teacher=weights, teacher_net=OutsideWeights(arch="resnet50"))
    with pytest.raises(CheckpointError) as caught:
        load_teacher(plain, tiny_dataset)
    message = str(caught.value)
    assert "\n" not in message and str(weights) in message and "do not fit resnet50" in message
    with pytest.raises(CheckpointError, match="needs a teacher"):
        load_teacher(TeacherConfig(), tiny_dataset)


def test_a_cached_teacher_gives_its_outputs_of_the_plain_images_and_only_where_the_method_allows(
        trained_checkpoint, tiny_dataset):
    from fastssl.methods.compress import CompRess, CompRessConfig
    from fastssl.methods.seed import SEED, SEEDConfig
    from pipelines.loader import Loader
    from pipelines.views import ViewRecipe
    from tests.methods.common import tiny_backbone

    view = ViewConfig(size=32)
    loader = Loader(tiny_dataset, ViewRecipe({"global": [view]}), 16, torch.device("cpu"))
    cached = CompRess(CompRessConfig(teacher=trained_checkpoint, cache_teacher=True, memory_size=32),
                      tiny_backbone(), view, tiny_dataset)
    cached.prepare(loader)
    plain = next(iter(loader.eval_loader(loader.info.train_split, 64)))
    expected = cached.frozen_teacher(plain.views["eval"]).features
    indices = torch.tensor([3, 0, 7])
    views = torch.randn(6, 3, 32, 32)  # two views of the three images: the same cached outputs for both
    outputs = cached.teacher_outputs(views, indices)
    torch.testing.assert_close(outputs.features, expected[indices.repeat(2)])
    refused = SEED(SEEDConfig(teacher=trained_checkpoint, cache_teacher=True, queue_size=32), tiny_backbone(), view,
                   tiny_dataset)
    with pytest.raises(ValueError, match="SEED's teacher sees the augmented views, so its outputs differ at every"):
        refused.prepare(loader)


def test_bingo_bags_are_each_images_nearest_others_by_cosine():
    from fastssl.methods.bingo import neighbour_bags

    features = torch.randn(50, 8)
    unit = F.normalize(features, dim=1)
    bags = neighbour_bags(features, 5, chunk=16)
    for i in range(50):
        others = [j for j in range(50) if j != i]
        ranked = sorted(others, key=lambda j: -float(unit[i] @ unit[j]))
        assert bags[i].tolist() == ranked[:5]


def test_cutmix_pastes_one_box_and_reports_the_share_of_the_anchor_left():
    from fastssl.methods.bingo import cutmix

    torch.manual_seed(3)
    anchors, companions = torch.zeros(4, 3, 16, 16), torch.ones(4, 3, 16, 16)
    mixed, kept = cutmix(anchors, companions, 2.0)
    pasted = mixed[0, 0]
    assert torch.equal(mixed, mixed[:1].expand_as(mixed))  # one box for the whole batch
    assert kept == pytest.approx(1 - pasted.mean().item()) and 0 < kept < 1
    rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
    assert pasted[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # a rectangle
    assert anchors.sum() == 0  # the anchors themselves are left as they were
