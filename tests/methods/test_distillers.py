"""Each distillation recipe trains two steps on the CPU from a tiny MoCo v2 teacher made in
the test (``trained_checkpoint``): the student learns, the teacher does not move, both are
monitored, and a mismatched teacher is refused in one line before any work."""

import json
import math

import pytest
import torch

from fastssl.recipes.launch import main as run_recipe
from fastssl.weights import read_checkpoint

DISTILLERS = ["seed", "compress", "disco", "simreg", "bingo"]
TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "32", "--run.eval-batch-size", "32",
        "--run.no-progress-bar", "--run.log-every-steps", "1", "--optim.epochs", "1", "--optim.warmup-epochs", "0"]
SMALL_MEMORIES = {"seed": ["--method.queue-size", "64"], "compress": ["--method.memory-size", "64"],
                  "disco": ["--method.queue-size", "64"], "bingo": ["--method.queue-size", "64"]}


@pytest.mark.parametrize("name", DISTILLERS)
def test_two_steps_train_the_student_and_leave_the_teacher_as_it_was(name, trained_checkpoint, tiny_dataset,
                                                                      tmp_path):
    teacher_before = read_checkpoint(trained_checkpoint)["method"]
    summary = run_recipe(name, ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), "--method.teacher",
                                str(trained_checkpoint), *TINY, *SMALL_MEMORIES.get(name, [])])
    assert summary["finished"] and summary["epochs_done"] == 1
    run = tmp_path / f"{name}-tiny"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    steps = 4 if name == "bingo" else 2  # BINGO's batches are half anchors: 64 images anchor in 4 steps
    assert len(losses) == steps and all(math.isfinite(x) for x in losses)
    assert {"student", "teacher"} <= summary["knn"].keys()
    state = read_checkpoint(run / "checkpoint.pt")
    assert [k for k in state["method"] if k.startswith("teacher.")] == ["teacher.sha256"]
    assert torch.equal(read_checkpoint(trained_checkpoint)["method"]["student.backbone.conv1.weight"],
                       teacher_before["student.backbone.conv1.weight"])


def test_a_teacher_of_another_architecture_is_refused_in_one_line_before_any_work(
        trained_checkpoint, tiny_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_recipe("seed", ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), "--method.teacher",
                            str(trained_checkpoint), "--method.teacher-net.arch", "resnet50", *TINY])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert "the teacher is a resnet18, not the --method.teacher-net.arch resnet50" in lines[0]
    assert not (tmp_path / "seed-tiny").exists()
