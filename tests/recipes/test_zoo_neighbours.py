"""Two-step runs of the nearest-neighbour recipes (NNCLR, MSF, SNCLR) on a tiny data set,
and their presets."""

import json
import math

import pytest

from fastssl.recipes import get
from fastssl.recipes.launch import main as run_recipe
from pipelines.spec import CIFAR100_MEAN

TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16",
        "--run.eval-batch-size", "32", "--run.no-progress-bar", "--run.log-every-steps", "1",
        "--optim.epochs", "1", "--run.stop-after-steps", "2",
        "--method.memory-size", "32", "--method.proj-hidden", "64", "--method.pred-hidden", "64"]


@pytest.mark.parametrize("name,extra", [
    ("nnclr", []),
    ("nnclr", ["--method.top-k", "5"]),
    ("msf", []),
    ("snclr", []),
])
def test_two_steps(name, extra, tiny_dataset, tmp_path):
    summary = run_recipe(name, ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY, *extra])
    run_dir = tmp_path / f"{name}-tiny"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    assert not summary["finished"] and (run_dir / "checkpoint.pt").exists()
    monitored = {"student"} if name == "nnclr" else {"student", "teacher"}  # NNCLR has no momentum encoder
    assert set(summary["knn"]) == monitored
    assert all("before_training" in summary["knn"][net] for net in monitored)


@pytest.mark.parametrize("name", ["nnclr", "msf", "snclr"])
def test_tiny_imagenet_presets_follow_mini_ssl(name):
    presets = get(name).presets
    for preset in ("tiny-imagenet", "tiny-imagenet-32"):
        assert presets[preset].method.memory_size == 16384
        if name != "nnclr":
            assert presets[preset].method.momentum == 0.996
    assert presets["cifar10"].method.memory_size == 4096


def test_msf_target_view_is_mini_ssls_weak_augmentation():
    recipe = get("msf")
    cfg = recipe.presets["cifar100"]
    strong, weak = cfg.view_groups()["global"]
    assert strong == cfg.views and strong.jitter_p == 0.8 and strong.blur_p == 0.5
    assert weak.flip_p == 0.9 and weak.crop_scale == (0.2, 1.0)
    assert weak.jitter_p == weak.grayscale_p == weak.blur_p == weak.solarize_p == 0.0
    assert weak.mean == CIFAR100_MEAN  # the presets rescale the weak view too
    assert recipe.presets["tiny-imagenet"].weak_views.size == 64
