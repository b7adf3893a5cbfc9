"""tools/linear_probe.py on a two-step MoCo v2 checkpoint: both protocols into linear.json;
an export of it and the same weights as a plain torchvision state dict give the same fast
probe; bad input is one error line, status 2 and nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fastssl.export import export
from fastssl.weights import load_backbone
from pipelines.spec import CIFAR10_MEAN, CIFAR10_STD
from tools import linear_probe as tool

FAST = ["--protocol", "fast", "--eval-batch-size", "32"]


def outside(arch: str = "resnet18") -> list[str]:
    """The options that build the trained run's backbone (CIFAR stem, width 8) for its plain state dict."""
    return ["--arch", arch, "--cifar-stem", "--no-maxpool", "--width", "8", "--image-size", "32",
            "--mean", *map(str, CIFAR10_MEAN), "--std", *map(str, CIFAR10_STD)]


def torchvision_style(checkpoint: Path, path: Path) -> Path:
    """The run's backbone as a torchvision training script saves one: a plain state dict,
    names as they are, with a classifier beside the backbone."""
    state = load_backbone(checkpoint).network.state_dict()
    torch.save({**state, "fc.weight": torch.randn(10, 64), "fc.bias": torch.randn(10)}, path)
    return path


@pytest.fixture
def checkpoint(trained_checkpoint, tmp_path) -> Path:
    """A copy of a trained run: the probe writes linear.json beside its checkpoint."""
    return Path(shutil.copytree(trained_checkpoint.parent, tmp_path / "mocov2-tiny")) / "checkpoint.pt"


def test_both_protocols_write_linear_json(checkpoint, capsys):
    fast = tool.main([str(checkpoint), "--protocol", "fast", "--eval-batch-size", "32"])
    assert 0 <= fast["test_acc"] <= 100 and fast["test_images"] == 24
    assert "fast linear probe" in capsys.readouterr().out
    protocol = tool.main([str(checkpoint), "--epochs", "2", "--batch-size", "16", "--eval-batch-size", "32"])
    assert [r["lr"] for r in protocol["history"]] == pytest.approx([30.0, 3.0])
    assert protocol["epochs_trained"] == 1 and protocol["device"] == "cpu"
    written = json.loads((checkpoint.parent / "linear.json").read_text())
    assert set(written) == {"fast", "mini-ssl"}  # the earlier protocol's entry is kept
    assert written["mini-ssl"]["last"] == protocol["last"] and written["fast"]["test_acc"] == fast["test_acc"]
    out = capsys.readouterr().out
    assert "Mini-SSL linear protocol" in out and "linear.json" in out
    assert not [p for p in checkpoint.parent.iterdir() if ".tmp-" in p.name]


def test_bad_input_is_one_line_and_writes_nothing(checkpoint, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoint, run / "checkpoint.pt")
    (run / "notes.txt").write_text("not a checkpoint")
    torch.save(torch.zeros(3), run / "tensor.pt")
    good = str(run / "checkpoint.pt")
    for args, expected in [
        ([str(run / "missing.pt")], "no such file"),
        ([str(run / "notes.txt")], "not a fastssl checkpoint"),
        ([str(run / "tensor.pt")], "not a fastssl checkpoint"),
        ([good, "--data", str(tmp_path / "nowhere")], "not a converted data set"),
        ([good, "--epochs", "0"], "at least 1"),
        ([good, "--batch-size", "1000"], "batch size 1000"),
        ([good, "--protocol", "best"], "--protocol"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            tool.main(args)
        assert exit_.value.code == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("linear_probe.py: error:") and "\n" not in err and expected in err, (args, err)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "notes.txt", "tensor.pt"]


def test_an_export_and_a_plain_state_dict_probe_as_their_checkpoint(checkpoint, tiny_dataset, tmp_path):
    reference = tool.main([str(checkpoint.parent), *FAST])["test_acc"]
    export(checkpoint.parent, tmp_path / "exported")
    exported = tool.main([str(tmp_path / "exported" / "backbone.pt"), *FAST])
    assert exported["test_acc"] == reference and exported["kind"] == "export" and exported["epochs_trained"] == 1
    assert exported["data"] == str(tiny_dataset)  # from the model card
    assert json.loads((tmp_path / "exported" / "linear.json").read_text())["fast"]["test_acc"] == reference
    plain = torchvision_style(checkpoint, tmp_path / "resnet18.pth")
    result = tool.main([str(plain), *FAST, *outside(), "--data", str(tiny_dataset)])
    assert result["test_acc"] == reference and result["kind"] == "state dict" and result["epochs_trained"] is None
    assert json.loads((tmp_path / "linear.json").read_text())["fast"]["test_acc"] == reference  # beside the file


def test_outside_weights_that_do_not_fit_are_refused(checkpoint, tiny_dataset, tmp_path, capsys):
    plain = str(torchvision_style(checkpoint, tmp_path / "resnet18.pth"))
    tampered = tmp_path / "tampered"
    export(checkpoint.parent, tampered)
    weights = torch.load(tampered / "backbone.pt", weights_only=True)
    torch.save({name: value + 1 for name, value in weights.items()}, tampered / "backbone.pt")
    (tmp_path / "empty").mkdir()
    data = ["--data", str(tiny_dataset)]
    before = sorted(tmp_path.rglob("*"))
    for args, expected in [
        ([plain, *outside("resnet50"), *data], f"{plain}: the weights do not fit resnet50 (CIFAR stem, width 8): "
                                               "missing layer1.0.conv3.weight"),
        ([plain, *outside(), "--no-cifar-stem", *data], "conv1.weight is (8, 3, 3, 3) in the file, (8, 3, 7, 7)"),
        ([plain, *data], "name its architecture with --arch"),
        ([plain, *outside()], "give --data"),
        ([str(tampered / "backbone.pt")], "sha256"),
        ([str(tampered)], "changed since the export"),
        ([str(checkpoint.parent), "--arch", "resnet18"], "a fastssl checkpoint, built as it was trained"),
        ([str(tmp_path / "empty")], "neither a checkpoint.pt"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            tool.main([*args, *FAST])
        assert exit_.value.code == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("linear_probe.py: error:") and "\n" not in err and expected in err, (args, err)
    assert sorted(tmp_path.rglob("*")) == before
