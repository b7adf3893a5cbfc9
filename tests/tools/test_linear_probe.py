"""tools/linear_probe.py on a two-step MoCo v2 checkpoint: both protocols into linear.json;
bad input is one error line, status 2 and nothing written."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from fastssl.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "32", "--run.eval-batch-size", "32",
        "--run.no-progress-bar", "--run.log-every-steps", "1", "--optim.epochs", "1", "--method.queue-size", "32"]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


tool = load_tool("linear_probe")


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset, tmp_path_factory) -> Path:
    """A finished one-epoch (two-step) MoCo v2 run on the tiny data set."""
    out = tmp_path_factory.mktemp("runs")
    load_recipe("mocov2").main(["--data", str(tiny_dataset), "--run.out-dir", str(out), *TINY])
    return out / "mocov2-tiny" / "checkpoint.pt"


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
