"""Metrics reach the trackers users run, through accelerate's tracker API: TensorBoard's
event files and an offline W&B run hold the same numbers as metrics.jsonl."""

import json

import pytest

from fastssl.recipes.launch import main as run_recipe

TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16", "--method.queue-size", "32",
        "--run.eval-batch-size", "32", "--run.no-progress-bar", "--run.log-every-steps", "1", "--optim.epochs", "1",
        "--optim.warmup-epochs", "1"]


def train(data, out, tracker):
    run_recipe("mocov2", ["--data", str(data), "--run.out-dir", str(out), *TINY, "--run.trackers", tracker])
    run_dir = out / "mocov2-tiny"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return run_dir, records


def test_tensorboard_gets_every_logged_number(tiny_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, records = train(tiny_dataset, tmp_path, "tensorboard")
    accumulator = EventAccumulator(str(run_dir / "trackers" / run_dir.name))  # the scalars (hparams: below it)
    accumulator.Reload()
    losses = [event.value for event in accumulator.Scalars("train/loss")]
    assert losses == pytest.approx([r["loss"] for r in records if r["kind"] == "train"])
    knn = [event.value for event in accumulator.Scalars("eval/knn_student")]
    assert knn == pytest.approx([r["knn_student"] for r in records if r["kind"] == "eval"])


def test_an_offline_weights_and_biases_run_is_written(tiny_dataset, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir, records = train(tiny_dataset, tmp_path, "wandb")
    (offline,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")  # what `wandb sync` uploads
    logged = offline.read_bytes()  # protobuf records: keys and JSON values as plain bytes
    for record in (r for r in records if r["kind"] == "train"):
        assert b"train/loss" in logged and json.dumps(record["loss"]).encode() in logged
