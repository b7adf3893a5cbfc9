"""fastssl.weights, through the tools and on its own: every tool takes a run folder from any
working directory and follows a run moved with its data set; an export moved with its data
set finds it; plain torchvision (ResNet) and timm (ViT) state dicts load strictly, with
the same features, and a mismatch is one line naming the file, the network and the key."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastssl.export import export
from fastssl.recipes.launch import main as run_recipe
from fastssl.weights import CheckpointError, OutsideWeights, load_backbone
from pipelines.spec import IMAGENET_MEAN

ROOT = Path(__file__).resolve().parents[2]
RUN = Path("runs") / "mocov2-tiny"
TINY_RUN = [
    "--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "32", "--run.eval-batch-size", "32",
    "--run.no-progress-bar", "--optim.epochs", "1", "--method.queue-size", "32", "--run.no-knn-before-training",
]
TOOLS = {  # each tool's options, and what it writes into the run folder
    "linear_probe": (["--protocol", "fast", "--eval-batch-size", "32"], "linear.json"),
    "diagnose": (["--queries", "2", "--neighbours", "2", "--tsne-images", "10", "--eval-batch-size", "32"], "tsne.png"),
    "export": ([], "export/model_card.json"),
}


@pytest.fixture
def project(tiny_dataset, tmp_path, monkeypatch) -> Path:
    """A folder holding ``data/tiny`` and ``runs/mocov2-tiny``, a one-epoch run trained in it
    with both paths given relative to it."""
    project = tmp_path / "project"
    shutil.copytree(tiny_dataset, project / "data" / "tiny")
    monkeypatch.chdir(project)
    run_recipe("mocov2", ["--data", "data/tiny", "--run.out-dir", "runs", *TINY_RUN])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return project


def test_every_tool_started_elsewhere_takes_the_run_folder(project, tmp_path):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}  # three processes share the cores
    running = {
        name: subprocess.Popen([sys.executable, str(ROOT / "tools" / f"{name}.py"), str(project / RUN), *options],
                               cwd=tmp_path / "elsewhere", env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        for name, (options, _) in TOOLS.items()
    }
    for name, process in running.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, (name, stderr)
        assert (project / RUN / TOOLS[name][1]).is_file(), name


@pytest.mark.parametrize("name", TOOLS)
def test_a_tool_follows_a_run_moved_with_its_data_set(name, project, tmp_path):
    options, written = TOOLS[name]
    moved = Path(shutil.move(project, tmp_path / "moved"))
    importlib.import_module(f"tools.{name}").main([str(moved / RUN), *options])
    assert (moved / RUN / written).is_file()
    if name == "linear_probe":
        assert json.loads((moved / RUN / written).read_text())["fast"]["data"] == str(moved / "data" / "tiny")
    if name == "export":
        card = json.loads((moved / RUN / written).read_text())
        assert card["data_set"]["path"] == str(moved / "data" / "tiny") and card["data_set"]["source"] == "synthetic"


@pytest.mark.parametrize("name", ["linear_probe", "diagnose"])
def test_a_missing_data_set_names_both_paths(name, project, tmp_path, capsys):
    moved = Path(shutil.move(project, tmp_path / "moved"))
    shutil.rmtree(moved / "data")
    before = sorted((moved / RUN).iterdir())
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(f"tools.{name}").main([str(moved / RUN), *TOOLS[name][0]])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{name}.py: error: the data set of {moved / RUN} is not at {project / 'data' / 'tiny'} "
                          f"nor at {moved / RUN / '..' / '..' / 'data' / 'tiny'}"), err
    assert "\n" not in err and sorted((moved / RUN).iterdir()) == before


def test_an_export_moved_with_its_data_set_finds_it(project, tmp_path):
    card = export(project / RUN, project / "exported")
    assert card["data_set"]["relative_path"] == "../data/tiny"
    moved = Path(shutil.move(project, tmp_path / "moved"))
    trained = load_backbone(moved / "exported")
    assert trained.kind == "export" and trained.folder == moved / "exported" and trained.name == "mocov2-tiny"
    assert trained.data_set() == moved / "data" / "tiny"


def plain_resnet(trained_checkpoint: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The trained run's backbone (CIFAR stem, width 8) and its state dict with a classifier beside it."""
    network = load_backbone(trained_checkpoint).network
    return network, {**network.state_dict(), "fc.weight": torch.randn(10, 64), "fc.bias": torch.randn(10)}


@pytest.mark.parametrize("wrap", ["plain", "ddp", "state_dict", "model"])
def test_a_torchvision_state_dict_gives_the_same_features(wrap, trained_checkpoint, tiny_dataset, tmp_path):
    network, state = plain_resnet(trained_checkpoint)
    if wrap != "plain":
        state = {f"module.{name}": value for name, value in state.items()}  # as DDP saves it
    torch.save({wrap: state, "epoch": 3} if wrap in ("state_dict", "model") else state, tmp_path / "resnet18.pth")
    trained = load_backbone(tmp_path / "resnet18.pth", OutsideWeights("resnet18", cifar_stem=True, maxpool=False,
                                                                       width=8), tiny_dataset)
    assert trained.kind == "state dict" and trained.folder == tmp_path and not trained.network.training
    assert trained.views.size == 32 and trained.views.mean == IMAGENET_MEAN  # the data set's size; ImageNet's mean
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(trained.network(images), network(images), rtol=0, atol=0)


def test_a_timm_vit_state_dict_gives_timm_features(tiny_dataset, tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10).eval()
    torch.save(model.state_dict(), tmp_path / "vit.pth")
    outside = OutsideWeights("vit_tiny", patch_size=4, image_size=32)
    trained = load_backbone(tmp_path / "vit.pth", outside, tiny_dataset)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_head(model.forward_features(images), pre_logits=True)
        torch.testing.assert_close(trained.network(images), features, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match=r"vit\.pth: the weights do not fit vit_tiny \(patch 16, 32 px\): "
                                              r"pos_embed is \(1, 65, 192\) in the file, \(1, 5, 192\)"):
        load_backbone(tmp_path / "vit.pth", OutsideWeights("vit_tiny", image_size=32), tiny_dataset)
    with pytest.raises(CheckpointError, match=r"vit_small \(patch 4, 32 px\): cls_token is \(1, 1, 192\)"):
        load_backbone(tmp_path / "vit.pth", OutsideWeights("vit_small", patch_size=4), tiny_dataset)
