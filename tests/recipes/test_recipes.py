"""Two-step runs of each recipe on a tiny data set, resume, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastssl.recipes.launch import main as run_recipe

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16",
        "--run.eval-batch-size", "32", "--run.no-progress-bar", "--run.log-every-steps", "1"]


def run(name, data, out, *extra):
    args = ["--data", str(data), "--run.out-dir", str(out), *TINY, *extra]
    if name == "mocov2":
        args += ["--method.queue-size", "32"]
    return run_recipe(name, args)


@pytest.mark.parametrize("name,extra", [
    ("mocov2", []),
    ("simclr", []),
    ("simclr", ["--method.loss", "nt_xent", "--method.temperature", "0.5"]),
    ("mocov2", ["--preset", "tiny-imagenet", "--views.size", "40"]),  # max-pool kept
    ("simclr", ["--preset", "imagenette-128", "--views.size", "64"]),  # ImageNet stem
])
def test_two_steps(name, extra, tiny_dataset, tmp_path):
    summary = run(name, tiny_dataset, tmp_path, "--optim.epochs", "1", "--run.stop-after-steps", "2", *extra)
    run_dir = tmp_path / f"{name}-tiny"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(r["loss"] > 0 for r in train)
    assert records[0]["kind"] == "eval" and records[0]["epoch"] == 0  # kNN before training
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "summary.json").exists()
    assert not summary["finished"] and summary["images_per_s"] > 0
    assert "before_training" in summary["knn"]["student"]
    if name == "mocov2":
        assert "teacher" in summary["knn"]


def final_weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["method"]


def test_resume_mid_epoch_matches_an_uninterrupted_run(tiny_dataset, tmp_path):
    common = ["--optim.epochs", "2", "--run.knn-every-epochs", "1"]
    straight = run("mocov2", tiny_dataset, tmp_path / "a", *common)
    assert straight["finished"] and straight["epochs_done"] == 2
    first = run("mocov2", tiny_dataset, tmp_path / "b", *common, "--run.stop-after-steps", "3")
    assert not first["finished"]
    resumed = run("mocov2", tiny_dataset, tmp_path / "b", *common, "--resume")
    assert resumed["finished"]
    a, b = final_weights(tmp_path / "a" / "mocov2-tiny"), final_weights(tmp_path / "b" / "mocov2-tiny")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert straight["knn"] == resumed["knn"]


def cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "recipes" / "mocov2.py"), *args],
                          capture_output=True, text=True)


def test_bad_input_is_one_line_and_status_2(tiny_dataset, tmp_path):
    for args, expected in [
        (["--data", str(tmp_path / "missing")], "missing"),
        (["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), "--resume"], "--resume"),
        (["--data", str(tiny_dataset), "--optim.bogus", "1"], "--optim.bogus"),
        (["--data", str(tiny_dataset), "--preset", "nope"], "--preset"),
    ]:
        result = cli(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mocov2.py: error:") and expected in lines[0]


def test_gradient_accumulation_is_refused_for_batch_dependent_losses(tiny_dataset, tmp_path):
    result = cli("--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY, "--optim.accumulate-steps", "2")
    assert result.returncode == 2
    assert "--optim.accumulate-steps 2: mocov2's loss depends on the whole batch" in result.stderr


def test_lars_vit_deterministic_tensorboard_and_collapse_metrics(tiny_dataset, tmp_path):
    summary = run_recipe("simclr", [
        "--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), "--optim.batch-size", "16",
        "--run.eval-batch-size", "32", "--run.no-progress-bar", "--run.log-every-steps", "2",
        "--model.arch", "vit_tiny", "--optim.optimizer", "lars", "--optim.epochs", "1",
        "--run.stop-after-steps", "2", "--run.deterministic", "--run.trackers", "tensorboard",
    ])
    run_dir = tmp_path / "simclr-tiny"
    train = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["kind"] == "train"]
    assert len(train) == 1 and train[0]["loss"] > 0
    assert 0 < train[0]["embedding_std"] and 1 <= train[0]["effective_rank"] <= 16
    assert list((run_dir / "trackers").glob("**/events.out.tfevents.*"))
    assert summary["config"]["model"]["arch"] == "vit_tiny"
    torch.use_deterministic_algorithms(False)


def test_a_diverging_run_stops_with_one_line_naming_the_step(tiny_dataset, tmp_path):
    result = cli("--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY, "--optim.lr-per-256", "1e30",
                 "--optim.warmup-epochs", "0", "--optim.epochs", "2", "--method.queue-size", "32")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "training diverged" in lines[0] and "epoch 1 step" in lines[0]
