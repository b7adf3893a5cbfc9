"""Two-step runs of the BYOL, SimSiam and MoCo v3 recipes on a tiny data set."""

import json
import math

import pytest
import torch

from fastssl.recipes import get
from fastssl.recipes.launch import main as run_recipe

TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16",
        "--run.eval-batch-size", "32", "--run.no-progress-bar", "--run.log-every-steps", "1",
        "--optim.epochs", "1", "--run.stop-after-steps", "2"]
SMALL_HEADS = ["--method.proj-hidden", "32", "--method.proj-dim", "16", "--method.pred-hidden", "32"]


@pytest.mark.parametrize("name,extra", [
    ("byol", []),
    ("simsiam", []),
    ("mocov3", []),
    # ViT-Tiny with patch 4 and AdamW; 16 px views (16 tokens) keep it quick on a CPU.
    ("mocov3", ["--preset", "cifar10-vit", "--views.size", "16", "--second-views.size", "16"]),
])
def test_two_steps(name, extra, tiny_dataset, tmp_path):
    summary = run_recipe(name, 
        ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY, *SMALL_HEADS, *extra]
    )
    run_dir = tmp_path / f"{name}-tiny"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(math.isfinite(r["loss"]) for r in train)
    assert records[0]["kind"] == "eval" and records[0]["epoch"] == 0  # kNN before training
    assert not summary["finished"] and "before_training" in summary["knn"]["student"]
    has_teacher = name != "simsiam"
    assert ("teacher" in summary["knn"]) == has_teacher
    if has_teacher:  # 4 steps per epoch: BYOL's m constant 0.99 (Mini-SSL); MoCo v3's on the cosine from 0.99 to 1
        expected = [0.99 if name == "byol" else 1 - 0.005 * (1 + math.cos(math.pi * step / 4)) for step in (0, 1)]
        assert [r["ema_momentum"] for r in train] == pytest.approx(expected)
    if name == "simsiam":  # after a decayed step the predictor keeps the peak lr (0.03 × 16/256)
        groups = torch.load(run_dir / "checkpoint.pt", weights_only=False)["optimizer"]["param_groups"]
        peak = 0.03 * 16 / 256
        fixed = [g["lr"] for g in groups if g.get("fixed_lr")]
        assert fixed and all(lr == pytest.approx(peak) for lr in fixed)
        assert all(g["lr"] < peak for g in groups if not g.get("fixed_lr"))
    if extra:
        assert summary["config"]["model"]["arch"] == "vit_tiny" and summary["config"]["optim"]["optimizer"] == "adamw"


def test_presets():
    byol = get("byol").presets
    tiny = byol["tiny-imagenet"]
    assert tiny.method.momentum == 0.996 and tiny.method.momentum_final is None  # constant, as Mini-SSL
    assert tiny.second_views.size == tiny.views.size == 64 and tiny.second_views.mean == tiny.views.mean
    first, second = byol["cifar10"].views, byol["cifar10"].second_views
    assert first == second and (first.blur_p, first.solarize_p) == (0.5, 0.0)  # Mini-SSL's views for both
    paper = byol["cifar10-paper"]
    assert (paper.views.blur_p, paper.second_views.blur_p, paper.second_views.solarize_p) == (0.5, 0.1, 0.2)
    assert paper.method.momentum_final == 1.0
    mocov3 = get("mocov3").presets
    for name in ("cifar10", "cifar100", "tiny-imagenet"):
        vit = mocov3[f"{name}-vit"]
        assert vit.model.arch == "vit_tiny" and vit.model.patch_size == mocov3[name].model.patch_size
        assert vit.views.crop_scale == vit.second_views.crop_scale == (0.08, 1.0)
        assert (vit.method.proj_layers, vit.method.pred_last_bn, vit.optim.optimizer) == (3, True, "adamw")
    assert mocov3["cifar10"].optim.optimizer == "lars" and mocov3["cifar10"].method.proj_layers == 2
