"""Export: the student backbone loads strictly into torchvision's ResNet, MobileNet or
EfficientNet (CIFAR-adapted as the model card says), timm's ViT and back through
fastssl.weights with identical features; the model card's fields; bad input."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from fastssl.config import ModelConfig, TrainConfig, to_json
from fastssl.export import build_snippet, export
from fastssl.methods.mocov2 import MoCoV2Config
from fastssl.models.backbone import backbone_from_config
from fastssl.weights import load_backbone
from tools import export as tool


def built_model(card: dict, folder: Path, monkeypatch) -> torch.nn.Module:
    """The model the card's ``weights.build`` lines make, run in the export folder."""
    monkeypatch.chdir(folder)
    namespace: dict = {}
    exec(card["weights"]["build"], namespace)  # the card's own instructions, as a user runs them
    return namespace["model"].eval()


def hand_made_checkpoint(path: Path, model: ModelConfig) -> torch.nn.Module:
    """A checkpoint in the loop's layout holding a split-BN backbone with non-trivial BN
    statistics (what training leaves), under ``student.backbone.``; returns the backbone."""
    torch.manual_seed(0)
    backbone = backbone_from_config(model, 32, 2)
    for name, tensor in backbone.state_dict().items():
        if name.endswith(("running_mean", "bias")):
            tensor.uniform_(-0.5, 0.5)
        elif name.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight")):
            tensor.uniform_(0.5, 2.0)
    with torch.no_grad():  # every BN's γ (torchvision's MobileNets name theirs by position)
        for module in backbone.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 2.0)
    config = to_json(TrainConfig(data=Path("/data/x"), method=MoCoV2Config(), model=model))
    method = {f"student.backbone.{k}": v for k, v in backbone.state_dict().items()}
    torch.save({"method_name": "mocov2", "method": method, "config": config, "epoch_done": 3}, path)
    return backbone.eval()


@pytest.mark.parametrize("cifar_stem,maxpool", [(True, False), (True, True), (False, True)])
def test_resnet_loads_strictly_into_torchvision_with_identical_features(cifar_stem, maxpool, tmp_path, monkeypatch):
    model = ModelConfig(width=64, cifar_stem=cifar_stem, maxpool=maxpool)
    ours = hand_made_checkpoint(tmp_path / "checkpoint.pt", model)
    card = export(tmp_path / "checkpoint.pt", tmp_path / "export")
    assert card["weights"]["loads_into"] == card["weights"]["names"] == "torchvision"
    assert "torchvision.models.resnet18()" in card["weights"]["build"]
    torchvision_model = built_model(card, tmp_path / "export", monkeypatch)  # load_state_dict is strict
    reloaded = load_backbone(tmp_path / "export").network  # the export read back through fastssl.weights
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torchvision_model(images), ours(images), rtol=0, atol=0)
        torch.testing.assert_close(reloaded(images), ours(images), rtol=0, atol=0)


@pytest.mark.parametrize("arch,cifar_stem,size,feature_dim", [
    ("mobilenet_v2", True, 32, 1280),
    ("mobilenet_v3_small", True, 32, 576),  # the CIFAR stem gives features[1] its identity shortcut
    ("efficientnet_b0", False, 64, 1280),
])
def test_torchvision_students_load_strictly_with_identical_features(arch, cifar_stem, size, feature_dim, tmp_path,
                                                                    monkeypatch):
    model = ModelConfig(arch=arch, cifar_stem=cifar_stem)
    ours = hand_made_checkpoint(tmp_path / "checkpoint.pt", model)
    card = export(tmp_path / "checkpoint.pt", tmp_path / "export")
    build = card["weights"]["build"]
    assert card["weights"]["loads_into"] == card["weights"]["names"] == "torchvision"
    assert card["feature_dim"] == feature_dim and card["architecture"] == arch
    assert f"torchvision.models.{arch}()" in build and "model.classifier = torch.nn.Identity()" in build
    assert "conv1" not in build and "model.fc" not in build and "maxpool" not in build
    assert ("stride = (1, 1)" in build) == cifar_stem
    torchvision_model = built_model(card, tmp_path / "export", monkeypatch)  # load_state_dict is strict
    reloaded = load_backbone(tmp_path / "export").network
    images = torch.randn(3, 3, size, size)
    with torch.no_grad():
        expected = ours(images)
        assert expected.shape == (3, feature_dim)
        torch.testing.assert_close(torchvision_model(images), expected, rtol=0, atol=0)
        torch.testing.assert_close(reloaded(images), expected, rtol=0, atol=0)


def test_the_cifar_stem_lines_are_torchvision_nets_strides():
    """The build lines' changes to torchvision's model, read off TorchvisionNet (the convolutions
    tests/models/test_students.py checks); the ImageNet stem changes nothing."""
    expected = {
        "mobilenet_v2": ["model.features[0][0].stride = (1, 1)", "model.features[2].conv[1][0].stride = (1, 1)"],
        "mobilenet_v3_small": ["model.features[0][0].stride = (1, 1)", "model.features[1].use_res_connect = True",
                               "model.features[1].block[0][0].stride = (1, 1)"],
        "efficientnet_b0": ["model.features[0][0].stride = (1, 1)"],
    }
    for arch, changes in expected.items():
        for cifar_stem in (True, False):
            lines = build_snippet(ModelConfig(arch=arch, cifar_stem=cifar_stem), 32).splitlines()
            assert lines == ["import torch, torchvision", f"model = torchvision.models.{arch}()",
                             *(changes if cifar_stem else []), "model.classifier = torch.nn.Identity()",
                             "model.load_state_dict(torch.load('backbone.pt'))"], (arch, cifar_stem)


def test_resnet34_loads_into_torchvisions_resnet34(tmp_path, monkeypatch):
    ours = hand_made_checkpoint(tmp_path / "checkpoint.pt", ModelConfig(arch="resnet34"))
    card = export(tmp_path / "checkpoint.pt", tmp_path / "export")
    assert card["weights"]["loads_into"] == "torchvision"
    assert "torchvision.models.resnet34()" in card["weights"]["build"]
    torchvision_model = built_model(card, tmp_path / "export", monkeypatch)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torchvision_model(images), ours(images), rtol=0, atol=0)


def test_vit_loads_strictly_into_timm_with_identical_features(tmp_path, monkeypatch):
    ours = hand_made_checkpoint(tmp_path / "checkpoint.pt", ModelConfig(arch="vit_tiny", patch_size=4))
    card = export(tmp_path / "checkpoint.pt", tmp_path / "export")
    assert card["weights"]["loads_into"] == card["weights"]["names"] == "timm" and card["feature_dim"] == 192
    timm_model = built_model(card, tmp_path / "export", monkeypatch)
    reloaded = load_backbone(tmp_path / "export" / "backbone.pt").network
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(timm_model(images), ours(images), rtol=0, atol=0)
        torch.testing.assert_close(reloaded(images), ours(images), rtol=0, atol=0)


@pytest.fixture
def run_dir(trained_checkpoint, tmp_path) -> Path:
    """A copy of a finished one-epoch (two-step) MoCo v2 run with a linear.json beside it."""
    run = Path(shutil.copytree(trained_checkpoint.parent, tmp_path / "mocov2-tiny"))
    linear = {"mini-ssl": {"protocol": "mini-ssl", "last": 50.0, "best": 62.5, "best_epoch": 2, "history": []},
              "fast": {"protocol": "fast", "test_acc": 58.3, "weight_decay": 0.01}}
    (run / "linear.json").write_text(json.dumps(linear))
    return run


def test_model_card_of_a_trained_run(run_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "exported"
    card = tool.main([str(run_dir / "checkpoint.pt"), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["backbone.pt", "model_card.json"]  # no temporary left
    assert json.loads((out / "model_card.json").read_text()) == card
    summary = json.loads((run_dir / "summary.json").read_text())
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert card["method"] == "mocov2" and card["name"] == "mocov2-tiny"
    assert card["data_set"] == {"path": summary["data"], "relative_path": os.path.relpath(summary["data"], out),
                                "source": "synthetic", "classes": 4}
    assert card["git_commit"] == summary["git_commit"] and card["config"] == state["config"]
    assert card["knn"]["student"] == {k: summary["knn"]["student"][k] for k in ("last", "last_epoch", "best",
                                                                                 "best_epoch")}
    assert card["linear"] == {"mini-ssl": {"last": 50.0, "best": 62.5, "best_epoch": 2},
                              "fast": {"test_acc": 58.3, "weight_decay": 0.01}}
    assert card["training"]["epochs_done"] == 1 and card["training"]["finished"] is True
    assert card["preprocessing"]["size"] == 32 and card["architecture"] == "resnet18"
    assert datetime.datetime.fromisoformat(card["date"]).date() == datetime.datetime.now(datetime.timezone.utc).date()
    assert card["weights"]["sha256"] == hashlib.sha256((out / "backbone.pt").read_bytes()).hexdigest()
    # Width 8 is no torchvision architecture: the card builds fastssl's ResNet instead.
    assert card["weights"]["loads_into"] == "fastssl" and "fastssl.models.resnet" in card["weights"]["build"]
    rebuilt = built_model(card, out, monkeypatch)
    ours = load_backbone(run_dir / "checkpoint.pt").network
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), ours(images), rtol=0, atol=0)
    out = capsys.readouterr().out
    assert "loads only into fastssl's ResNet (width 8; torchvision's ResNets are 64 channels wide" in out
    assert "load it with" in out


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    torch.save({"model": {}}, tmp_path / "other.pt")
    torch.save({"method_name": "x", "method": {"teacher.network.backbone.x": torch.zeros(1)}, "config": {}},
               tmp_path / "nostudent.pt")
    bad_arch = {"model": {"arch": "resnet9"}, "views": {}}
    torch.save({"method_name": "x", "method": {"student.backbone.x": torch.zeros(1)}, "config": bad_arch},
               tmp_path / "badarch.pt")
    (tmp_path / "empty").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, expected in [
        ([str(tmp_path / "missing.pt")], "no such file"),
        ([str(tmp_path / "empty")], "a folder without a checkpoint.pt"),
        ([str(tmp_path / "notes.txt")], "not a fastssl checkpoint"),
        ([str(tmp_path / "other.pt")], "no 'method_name', 'method' and 'config'"),
        ([str(tmp_path / "nostudent.pt")], "no student backbone"),
        ([str(tmp_path / "badarch.pt")], "unreadable run configuration"),
        ([str(tmp_path / "notes.txt"), "--out", str(tmp_path / "notes.txt")], "not a folder"),
        ([], "checkpoint"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            tool.main(args)
        assert exit_.value.code == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("export.py: error:") and "\n" not in err and expected in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_ema_teacher_exports_too(run_dir, tmp_path, monkeypatch):
    card = tool.main([str(run_dir), "--network", "teacher"])
    out = run_dir / "export-teacher"
    assert card["network"] == "teacher" and (out / "backbone.pt").exists()
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["method"]
    prefix = "teacher.network.backbone."
    exported = torch.load(out / "backbone.pt", weights_only=True)
    for name, value in exported.items():
        torch.testing.assert_close(value, state[prefix + name], rtol=0, atol=0)
    assert any(not torch.equal(state[prefix + n], state["student.backbone." + n]) for n in exported)  # not the student


def test_a_method_without_a_teacher_says_so(tiny_dataset, tmp_path, capsys):
    from fastssl.recipes.launch import main as run_recipe

    run_recipe("simclr", ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), "--model.width", "8",
                          "--model.bn-splits", "2", "--optim.batch-size", "16", "--optim.epochs", "1",
                          "--run.no-progress-bar", "--run.no-knn-before-training", "--run.eval-batch-size", "32"])
    with pytest.raises(SystemExit) as exit_:
        tool.main([str(tmp_path / "simclr-tiny"), "--network", "teacher"])
    assert exit_.value.code == 2 and "holds no teacher backbone" in capsys.readouterr().err
