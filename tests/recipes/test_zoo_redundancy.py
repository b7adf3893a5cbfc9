"""Two-step runs of the redundancy-reduction recipes (Barlow Twins, VICReg, VICRegL) on a
tiny data set, and their solo-learn settings."""

import json
import math

import pytest

from fastssl.recipes import get
from fastssl.recipes.launch import main as run_recipe

TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16",
        "--run.eval-batch-size", "32", "--run.no-progress-bar", "--run.log-every-steps", "1",
        "--optim.epochs", "1", "--run.stop-after-steps", "2",
        "--method.proj-hidden", "64", "--method.proj-dim", "64"]


@pytest.mark.parametrize("name,extra,logged", [
    ("barlow_twins", [], set()),
    ("vicreg", [], {"invariance", "variance", "covariance"}),
    ("vicregl", ["--method.local-hidden", "32", "--method.local-dim", "32"], {"global_loss", "local_loss"}),
])
def test_two_steps(name, extra, logged, tiny_dataset, tmp_path):
    summary = run_recipe(name, ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY, *extra])
    run_dir = tmp_path / f"{name}-tiny"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    assert all(math.isfinite(r[key]) for r in train for key in logged)
    assert not summary["finished"] and (run_dir / "checkpoint.pt").exists()
    assert set(summary["knn"]) == {"student"} and "before_training" in summary["knn"]["student"]
    assert summary["config"]["optim"]["optimizer"] == "lars"


def test_solo_learn_cifar_settings():
    barlow, vicreg, vicregl = (get(name).presets for name in ("barlow_twins", "vicreg", "vicregl"))
    for presets in (barlow, vicreg, vicregl):
        optim = presets["cifar10"].optim
        assert (optim.optimizer, optim.lr_per_256, optim.weight_decay, optim.lars_eta) == ("lars", 0.3, 1e-4, 0.02)
        assert optim.lars_exclude_bias_and_norm and optim.warmup_epochs == 10 and optim.epochs == 200
    # Barlow Twins: solo-learn's asymmetric views, solarisation on the second only.
    first, second = barlow["cifar100"].views, barlow["cifar100"].second_views
    assert first.crop_scale == (0.08, 1.0) and first.blur_p == 0.0 and first.jitter == (0.4, 0.4, 0.2, 0.1)
    assert (first.solarize_p, second.solarize_p) == (0.0, 0.2) and second.mean == first.mean
    assert barlow["tiny-imagenet"].second_views.size == 64
    assert (barlow["cifar10"].method.lambd, barlow["cifar10"].method.scale_loss) == (0.0051, 0.1)
    # VICReg and VICRegL: the same symmetric views with solarisation 0.1.
    assert vicreg["cifar10"].views == vicregl["cifar10"].views
    assert vicreg["cifar10"].views.solarize_p == 0.1 and vicreg["cifar10"].views.crop_scale == (0.2, 1.0)
    assert vicregl["cifar10"].method.alpha == 0.75
    assert vicregl["cifar10"].method.num_matches == (7, 2)
    assert vicregl["imagenette-224"].method.num_matches == (20, 4)
