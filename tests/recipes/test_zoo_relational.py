"""Two-step runs of the ReSSL, SCE and Jaccard MoCo recipes on a tiny data set."""

import json
import math

import pytest

from fastssl.recipes import get
from fastssl.recipes.launch import main as run_recipe

TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16",
        "--run.eval-batch-size", "32", "--run.no-progress-bar", "--run.log-every-steps", "1",
        "--optim.epochs", "1", "--run.stop-after-steps", "2", "--method.proj-hidden", "32"]


@pytest.mark.parametrize("name,extra", [
    ("ressl", ["--method.memory-size", "32"]),
    ("sce", ["--method.memory-size", "32"]),
    ("jaccard_moco", ["--method.queue-size", "32"]),
])
def test_two_steps(name, extra, tiny_dataset, tmp_path):
    summary = run_recipe(name, ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY, *extra])
    records = [json.loads(line) for line in (tmp_path / f"{name}-tiny" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    assert {"student", "teacher"} <= set(summary["knn"])
    if name == "jaccard_moco":  # Adam at 1e-3 whatever the batch, no warm-up, then cosine decay
        assert train[0]["lr"] == 1e-3 and train[1]["lr"] < 1e-3


def test_seed004_preset_is_the_seed_as_written():
    recipe = get("jaccard_moco")
    cfg = recipe.presets["seed004"]
    assert (cfg.model.arch, cfg.model.maxpool, cfg.views.size, cfg.views.blur_p) == ("resnet50", False, 64, 0.0)
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.weight_decay) == ("adamw", 1e-3, 0.0)
    assert (cfg.optim.batch_size, cfg.optim.epochs) == (128, 50)
    assert cfg.optim.schedule == "constant" and cfg.optim.warmup_epochs == 0  # the author's code has no lr schedule
    method = cfg.method
    assert (method.temperature, method.momentum, method.queue_size, method.proj_dim) == (0.5, 0.999, 4096, 128)


def test_tiny_imagenet_presets_follow_mini_ssl_and_scale_the_weak_view():
    for name in ("ressl", "sce"):
        preset = get(name).presets["tiny-imagenet"]
        assert (preset.method.momentum, preset.method.memory_size) == (0.996, 16384)
        assert preset.weak_views.size == preset.views.size == 64 and preset.weak_views.mean == preset.views.mean
        assert preset.weak_views.flip_p == 0.9 and preset.weak_views.jitter_p == 0.0
