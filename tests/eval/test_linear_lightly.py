"""The lightly linear protocol: its schedule against lightly's formula, top-5 on hand-made
logits, the protocol end to end, and tools/linear_probe.py keeping both protocols' entries."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from fastssl.config import ModelConfig
from fastssl.eval.linear import LIGHTLY, LinearConfig, cosine_lr, headline, topk_correct, train_linear
from fastssl.models.backbone import backbone_from_config
from pipelines.spec import ViewConfig
from tests.conftest import make_tensor_dataset
from tools import linear_probe as tool


def lightly_scale(step, max_steps, warmup_steps, start_value=1.0, end_value=0.001):
    """lightly v1.4.24's CosineWarmupScheduler.scale_lr with its cosine_schedule, written out
    (lightly/utils/scheduler.py): the factor on the base lr at scheduler step ``step``."""
    if step < warmup_steps:
        return start_value * (step + 1) / warmup_steps
    step, max_steps = step - warmup_steps, max_steps - warmup_steps
    if max_steps == 1 or step == max_steps:
        return end_value
    return end_value - (end_value - start_value) * (math.cos(math.pi * step / (max_steps - 1)) + 1) / 2


def test_lightly_preset_is_simclr_settings():
    cfg = LIGHTLY
    assert (cfg.name, cfg.epochs, cfg.batch_size, cfg.lr, cfg.lr_base_batch) == ("lightly", 90, 256, 0.1, 256)
    assert (cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.head_init_std) == (0.9, False, 0.0, None)
    assert (cfg.schedule, cfg.warmup_epochs, cfg.final_lr_fraction, cfg.crop_scale) == ("cosine", 0, 0.001, (0.08, 1.0))


@pytest.mark.parametrize("warmup_epochs", [0, 2])
def test_cosine_schedule_is_lightlys(warmup_epochs):
    cfg = dataclasses.replace(LIGHTLY, epochs=5, batch_size=512, warmup_epochs=warmup_epochs)
    steps_per_epoch = 7
    total = cfg.epochs * steps_per_epoch
    base = 0.1 * 512 / 256  # lightly's linear scaling with the batch
    ours = [cosine_lr(cfg, step, steps_per_epoch) for step in range(total)]
    theirs = [base * lightly_scale(step, total, warmup_epochs * steps_per_epoch) for step in range(total)]
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert ours[-1] == pytest.approx(base * 0.001)
    assert max(ours) == pytest.approx(base)


def test_topk_counts_labels_among_the_largest_logits():
    logits = torch.tensor([
        [9.0, 1, 2, 3, 4, 5, 6],  # label 0 ranked first: top-1 and top-5
        [9.0, 8, 7, 6, 5, 4, 3],  # label 4 ranked fifth: top-5 only
        [9.0, 8, 7, 6, 5, 4, 3],  # label 5 ranked sixth: neither
        [0.0, 1, 2, 3, 4, 5, 6],  # label 2 ranked fifth: top-5 only
    ])
    labels = torch.tensor([0, 4, 5, 2])
    assert topk_correct(logits, labels, 1).item() == 1
    assert topk_correct(logits, labels, 5).item() == 3
    assert topk_correct(logits, labels, 7).item() == 4


@pytest.fixture(scope="module")
def eight_classes(tmp_path_factory):
    """The tiny data set's kind with eight classes, so that top-5 means something."""
    return make_tensor_dataset(tmp_path_factory.mktemp("data") / "eight", train=64, test=24, classes=8)


def test_lightly_protocol_end_to_end(eight_classes):
    torch.manual_seed(0)
    backbone = backbone_from_config(ModelConfig(width=8, norm="bn"), 32, 1)
    cfg = dataclasses.replace(LIGHTLY, epochs=2, batch_size=16, eval_batch_size=32)
    result = train_linear(backbone, eight_classes, ViewConfig(), cfg, torch.device("cpu"))

    assert set(result) == {"protocol", "last", "best", "best_epoch", "last_top5", "best_top5", "test_images",
                           "seconds", "config", "history"}
    assert result["protocol"] == "lightly" and result["config"]["schedule"] == "cosine"
    history = result["history"]
    assert [r["lr"] for r in history] == pytest.approx([cosine_lr(cfg, step, 4) for step in (0, 4)])
    assert all(r["test_top5"] >= r["test_acc"] for r in history)
    assert result["last_top5"] == history[-1]["test_top5"] >= result["last"]
    assert result["best_top5"] == max(r["test_top5"] for r in history) >= result["best"]
    assert headline(result) == {name: result[name] for name in ("last", "best", "best_epoch", "last_top5",
                                                                "best_top5")}


def test_mini_ssl_reports_top5_too(eight_classes):
    torch.manual_seed(0)
    backbone = backbone_from_config(ModelConfig(width=8, norm="bn"), 32, 1)
    cfg = LinearConfig(epochs=1, batch_size=32, eval_batch_size=32)
    result = train_linear(backbone, eight_classes, ViewConfig(), cfg, torch.device("cpu"))
    assert result["protocol"] == "mini-ssl" and result["last_top5"] >= result["last"]


def test_probe_options_default_to_the_protocol():
    weights = Path("run")
    assert tool.protocol_config(tool.ProbeConfig(weights, protocol="lightly")) == LIGHTLY
    assert tool.protocol_config(tool.ProbeConfig(weights)) == LinearConfig()
    given = tool.protocol_config(tool.ProbeConfig(weights, protocol="lightly", epochs=3, lr=0.2))
    assert given == dataclasses.replace(LIGHTLY, epochs=3, lr=0.2)


def test_probe_keeps_both_protocols_in_linear_json(tiny_dataset, tmp_path, capsys):
    """A plain state dict (no run to train first), its linear.json beside it."""
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(backbone_from_config(ModelConfig(width=8, norm="bn"), 32, 1).state_dict(), weights)
    options = ["--arch", "resnet18", "--cifar-stem", "--no-maxpool", "--width", "8", "--data", str(tiny_dataset),
               "--batch-size", "16", "--eval-batch-size", "32", "--epochs", "1"]
    lightly = tool.main([str(weights), "--protocol", "lightly", *options])
    assert lightly["history"][0]["lr"] == pytest.approx(0.1 * 16 / 256)  # the lr scales with the batch
    assert lightly["last_top5"] is None and lightly["best_top5"] is None  # four classes: no top-5
    assert "lightly linear protocol" in capsys.readouterr().out
    mini_ssl = tool.main([str(weights), *options])
    written = json.loads((tmp_path / "linear.json").read_text())
    assert set(written) == {"lightly", "mini-ssl"}
    assert written["lightly"]["last"] == lightly["last"] and written["mini-ssl"]["last"] == mini_ssl["last"]
    assert written["lightly"]["config"]["epochs"] == 1 and written["mini-ssl"]["history"][0]["lr"] == 30.0
