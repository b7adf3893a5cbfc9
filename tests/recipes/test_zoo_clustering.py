"""Two-step runs of the clustering and self-distillation recipes (SwAV, DINO) on a tiny data
set: two global views alone, with local crops, and DINO with a ViT."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastssl.recipes.launch import main as run_recipe

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16",
        "--run.eval-batch-size", "32", "--run.no-progress-bar", "--run.log-every-steps", "1",
        "--optim.epochs", "1", "--run.stop-after-steps", "2"]
SMALL_HEADS = {
    "swav": ["--method.prototypes", "32", "--method.proj-hidden", "32", "--method.queue-size", "32"],
    "dino": ["--method.prototypes", "64", "--method.proj-hidden", "32", "--method.proj-dim", "16"],
}


@pytest.mark.parametrize("name,extra", [
    ("swav", []),
    # multi-crop, with the queue in the codes from the first step
    ("swav", ["--local-crops", "2", "--method.queue-start-epoch", "0"]),
    ("dino", []),
    ("dino", ["--local-crops", "2"]),
    # ViT-Tiny with 4 px patches and AdamW; its kNN (two ViTs over 88 images) left out for time
    ("dino", ["--preset", "cifar10-vit", "--local-crops", "2", "--run.no-knn-before-training",
              "--optim.batch-size", "8"]),
])
def test_two_steps(name, extra, tiny_dataset, tmp_path):
    args = ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY, *SMALL_HEADS[name], *extra]
    summary = run_recipe(name, args)
    run_dir = tmp_path / f"{name}-tiny"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(0 < r["loss"] < float("inf") for r in train)
    assert not summary["finished"] and summary["images_per_s"] > 0
    if name == "dino":  # solo-learn's constant 0.07; the ViT presets warm up from the paper's 0.04
        assert train[0]["teacher_temperature"] == pytest.approx(0.04 if "--preset" in extra else 0.07)
    if "--preset" in extra:
        assert summary["config"]["model"]["arch"] == "vit_tiny" and summary["config"]["optim"]["optimizer"] == "adamw"
        return
    assert records[0]["kind"] == "eval" and records[0]["epoch"] == 0  # kNN before training
    assert "before_training" in summary["knn"]["student"]
    if name == "dino":
        assert "before_training" in summary["knn"]["teacher"]


@pytest.mark.slow
def test_dino_with_local_crops_on_two_processes_matches_one(tiny_dataset, tmp_path):
    """Two gloo processes on the CPU train as one: the gathered centre, the teacher's EMA and
    two backbone calls (global, local) under DDP. (SwAV is left out: its projector's BN
    normalises over each process's share.)"""
    args = ["--data", str(tiny_dataset), *TINY, *SMALL_HEADS["dino"], "--local-crops", "2",
            "--run.stop-after-steps", "3", "--run.no-knn-before-training"]

    def train(out, processes):
        command = [str(ROOT / "recipes" / "dino.py"), "--run.out-dir", str(out), *args]
        if processes > 1:
            command = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                       "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *command]
        env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return torch.load(out / "dino-tiny" / "checkpoint.pt", weights_only=False)["method"]

    one, two = train(tmp_path / "one", 1), train(tmp_path / "two", 2)
    for key, value in one.items():
        if "running_" not in key and "num_batches_tracked" not in key:  # BN statistics are per process
            torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-5, msg=key)
