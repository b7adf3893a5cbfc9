"""tools/linear_probe.py on a two-step MoCo v2 checkpoint: both protocols into linear.json;
bad input is one error line, status 2 and nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fastssl.recipe import load_script

ROOT = Path(__file__).resolve().parents[2]



tool = load_script("tools", "linear_probe")



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
