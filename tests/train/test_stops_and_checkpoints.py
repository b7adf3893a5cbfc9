"""A run that survives being stopped: real signals, damaged and non-finite checkpoints, the
newest intact checkpoint taken, best.pt, and metrics that neither repeat nor lose a step."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from fastssl.recipes.launch import main as run_recipe
from fastssl.train.checkpoint import newest_intact
from fastssl.train.signals import StopSignals, honoured

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16", "--method.queue-size", "32",
        "--run.eval-batch-size", "32", "--run.no-progress-bar", "--run.knn-every-epochs", "1",
        "--optim.warmup-epochs", "1"]


def records(run_dir, kind="train"):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def weights(path):
    return torch.load(path, weights_only=False)["method"]


def assert_same_weights(a, b):
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def wait_for(condition, process=None, what="it"):
    """Wait, however loaded the machine, until ``condition()`` holds (or the process ends)."""
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {process.stderr.read()[-2000:]}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def straight(tiny_dataset, tmp_path_factory):
    """An uninterrupted run of 3 epochs of 4 steps, logged every 2 steps."""
    out = tmp_path_factory.mktemp("straight")
    run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(out), *TINY, "--optim.epochs", "3",
                          "--run.log-every-steps", "2"])
    return out / "mocov2-tiny"


def launch(tiny_dataset, out, *extra):
    command = [sys.executable, str(ROOT / "recipes" / "mocov2.py"), "--data", str(tiny_dataset),
               "--run.out-dir", str(out), *TINY, "--optim.epochs", "3", "--run.log-every-steps", "2", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("name,status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_stops_at_the_step_with_a_checkpoint_and_the_resume_is_exact(
    name, status, straight, tiny_dataset, tmp_path
):
    run_dir = tmp_path / "mocov2-tiny"
    process = launch(tiny_dataset, tmp_path, "--run.log-every-steps", "1")
    wait_for(lambda: (run_dir / "metrics.jsonl").exists() and records(run_dir), process, "its first step")
    process.send_signal(getattr(signal, name))
    _, stderr = process.communicate()
    assert process.returncode == status, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and f"stopped by {name} at epoch" in lines[0], stderr
    assert f"python recipes/mocov2.py --resume-from {run_dir}" in lines[0]
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    stopped_at = (state["loader"]["epoch"], state["loader"]["step"])
    assert stopped_at != (2, 4) and not json.loads((run_dir / "summary.json").read_text())["finished"]
    summary = run_recipe("mocov2", ["--resume-from", str(run_dir), "--run.log-every-steps", "2"])
    assert summary["finished"]
    assert_same_weights(run_dir / "checkpoint.pt", straight / "checkpoint.pt")


def test_a_second_signal_exits_at_once(monkeypatch):
    killed = []
    monkeypatch.setattr(os, "kill", lambda pid, number: killed.append(number))
    with StopSignals(("SIGUSR1",)) as signals:
        signal.raise_signal(signal.SIGUSR1)
        assert signals.received == signal.SIGUSR1 and not killed
        signal.raise_signal(signal.SIGUSR1)  # now the default action, sent again
        assert killed == [signal.SIGUSR1] and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_inside_a_submitit_job_sigterm_is_left_to_submitit(monkeypatch):
    assert "SIGTERM" in honoured(("SIGTERM", "SIGUSR2"))
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert honoured(("SIGTERM", "SIGUSR2")) == ("SIGUSR2",)


def test_the_handler_installed_before_takes_over_after_the_checkpoint(tiny_dataset, tmp_path):
    """submitit installs its SIGUSR2 handler (checkpoint, requeue) before the run starts."""
    run_dir, seen = tmp_path / "mocov2-tiny", []

    def requeue(number, frame):
        seen.append((number, (run_dir / "checkpoint.pt").exists()))

    previous = signal.signal(signal.SIGUSR2, requeue)

    def send_when_training():
        wait_for(lambda: (run_dir / "metrics.jsonl").exists() and records(run_dir))
        os.kill(os.getpid(), signal.SIGUSR2)

    sender = threading.Thread(target=send_when_training)
    sender.start()
    try:
        with pytest.raises(SystemExit) as exit_:
            run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY,
                                  "--optim.epochs", "20", "--run.log-every-steps", "1"])
    finally:
        sender.join()
        signal.signal(signal.SIGUSR2, previous)
    assert exit_.value.code == 128 + signal.SIGUSR2 and seen == [(signal.SIGUSR2, True)]


def test_a_signal_during_an_evaluation_stops_at_that_epochs_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    """Ctrl-C while the kNN of epoch 1 runs: the run takes no step of epoch 2."""
    from fastssl.train.loop import Loop

    evaluate = Loop.evaluate

    def interrupted(self, epoch):
        if epoch == 1:
            signal.raise_signal(signal.SIGINT)
        return evaluate(self, epoch)

    monkeypatch.setattr(Loop, "evaluate", interrupted)
    run_dir = tmp_path / "mocov2-tiny"
    with pytest.raises(SystemExit) as exit_:
        run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY,
                              "--optim.epochs", "3", "--run.log-every-steps", "2"])
    assert exit_.value.code == 130
    loader = torch.load(run_dir / "checkpoint.pt", weights_only=False)["loader"]
    assert (loader["epoch"], loader["step"]) == (0, 4)
    assert {r["epoch"] for r in records(run_dir)} == {0}


def test_a_killed_run_resumes_without_repeating_or_losing_a_step(straight, tiny_dataset, tmp_path):
    run_dir = tmp_path / "mocov2-tiny"
    process = launch(tiny_dataset, tmp_path, "--run.log-every-steps", "1")
    # killed after its first epoch's checkpoint, once it has logged steps of the second
    wait_for(lambda: (run_dir / "checkpoint.pt").exists() and any(r["epoch"] == 1 for r in records(run_dir)),
             process, "its second epoch")
    process.kill()
    process.communicate()
    run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), "--resume",
                          "--run.log-every-steps", "2"])
    # the resumed run logs every 2 steps from its checkpoint on, as the uninterrupted one
    mine, theirs = records(run_dir), records(straight)
    assert [(r["epoch"], r["step"]) for r in mine] == sorted({(r["epoch"], r["step"]) for r in mine})
    assert [r["loss"] for r in mine if r["epoch"] >= 1] == [r["loss"] for r in theirs if r["epoch"] >= 1]
    seconds = [r["train_seconds"] for r in mine]
    assert seconds == sorted(seconds)  # never backwards
    assert_same_weights(run_dir / "checkpoint.pt", straight / "checkpoint.pt")


def test_a_window_cut_by_a_stop_is_logged_whole(straight, tiny_dataset, tmp_path):
    common = ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path)]
    run_recipe("mocov2", [*common, *TINY, "--optim.epochs", "3", "--run.log-every-steps", "2",
                          "--run.stop-after-steps", "3"])  # inside the window of steps 3 and 4
    run_recipe("mocov2", [*common, "--resume"])
    mine, theirs = records(tmp_path / "mocov2-tiny"), records(straight)
    assert [(r["epoch"], r["step"], r["loss"]) for r in mine] == [(r["epoch"], r["step"], r["loss"]) for r in theirs]


def test_the_newest_intact_checkpoint_is_taken_and_best_kept(straight, tiny_dataset, tmp_path, capsys):
    files = sorted(p.name for p in straight.glob("*.pt"))
    assert files == ["best.pt", "checkpoint.1.pt", "checkpoint.pt"]  # the last 2, and the best
    evals = [r for r in records(straight, "eval") if r["epoch"] > 0]
    best = max(evals, key=lambda r: r["knn_student"])
    assert torch.load(straight / "best.pt", weights_only=False)["epoch_done"] == best["epoch"]
    run_dir = tmp_path / "mocov2-tiny"
    shutil.copytree(straight, run_dir)
    damaged = bytearray((run_dir / "checkpoint.pt").read_bytes())
    damaged[len(damaged) // 2 : len(damaged) // 2 + 4096] = os.urandom(4096)  # 4 KiB of rot
    (run_dir / "checkpoint.pt").write_bytes(bytes(damaged))
    summary = run_recipe("mocov2", ["--resume-from", str(run_dir)])  # redoes the last epoch
    assert "skipped" in capsys.readouterr().err and summary["finished"] and summary["epochs_done"] == 3
    assert_same_weights(run_dir / "checkpoint.pt", straight / "checkpoint.pt")


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, os.urandom(5000)], ids=["empty", "zeros", "random"])
def test_an_unreadable_checkpoint_is_one_line(content, tiny_dataset, tmp_path, capsys):
    run_dir = tmp_path / "mocov2-tiny"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(content)
    with pytest.raises(SystemExit) as exit_:
        run_recipe("mocov2", ["--resume-from", str(run_dir)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and "checkpoint" in lines[0] and str(run_dir) in lines[0]


def test_no_checkpoint_of_non_finite_weights(tiny_dataset, tmp_path, capsys):
    """A step that blows up inside a logging window, then a stop: nothing non-finite saved."""
    with pytest.raises(SystemExit) as exit_:
        run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY,
                              "--optim.lr-per-256", "1e30", "--optim.warmup-epochs", "0", "--optim.epochs", "2",
                              "--run.log-every-steps", "100", "--run.stop-after-steps", "2"])
    line = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "not finite at epoch 1 step 2" in line and "no checkpoint was written yet" in line
    assert not list((tmp_path / "mocov2-tiny").glob("*.pt"))


def test_a_new_run_sets_aside_what_a_run_without_checkpoint_left(tiny_dataset, tmp_path, capsys):
    run_dir = tmp_path / "mocov2-tiny"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"kind": "train", "epoch": 0, "step": 1, "loss": 9.0}\n')
    run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY,
                          "--optim.epochs", "1", "--run.no-knn-before-training"])
    (aside,) = run_dir.glob("abandoned-*")
    assert "9.0" in (aside / "metrics.jsonl").read_text() and str(aside) in capsys.readouterr().err
    assert all(r["loss"] != 9.0 for r in records(run_dir))


@pytest.mark.parametrize("args,expected", [
    (["--optim.batch-size", "0"], "--optim.batch-size 0: must be at least 1"),
    (["--optim.batch-size", "-32"], "--optim.batch-size -32: must be at least 1"),
    (["--optim.epochs", "0"], "--optim.epochs 0: must be at least 1"),
    (["--views.crop-scale", "0", "1"], "--views.crop-scale 0.0 1.0: must satisfy"),
    (["--views.blur-p", "1.5"], "--views.blur-p 1.5: a probability"),
    (["--views.local-rotation-p", "-0.1"], "--views.local-rotation-p -0.1: a probability"),
    (["--views.region-confusion-p", "1", "--views.region-grid", "0"], "--views.region-grid 0: must be between 1"),
    (["--run.stop-signals", "SIGNOPE"], "--run.stop-signals SIGNOPE: not a signal"),
    (["--model.bn-splits", "3"], "--model.bn-splits 3: must share out"),
])
def test_a_bad_value_is_refused_before_any_work(args, expected, tiny_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY, *args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "mocov2-tiny").exists()  # nothing made


def test_an_out_dir_that_is_a_file_is_refused_before_any_work(tiny_dataset, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit) as exit_:
        run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path / "afile"), *TINY])
    assert exit_.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err


def test_a_warm_up_longer_than_the_run_is_warned_about(tiny_dataset, tmp_path, capsys):
    run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY, "--optim.epochs", "1",
                          "--optim.warmup-epochs", "5", "--run.no-knn-before-training"])
    assert "warning: --optim.warmup-epochs 5.0 is longer than the run's 1 epochs" in capsys.readouterr().err


def test_a_damaged_test_split_fails_before_training(tiny_dataset, tmp_path, capsys):
    data = shutil.copytree(tiny_dataset, tmp_path / "data")
    images = data / "test" / "images.npy"
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    with pytest.raises(SystemExit) as exit_:
        run_recipe("mocov2", ["--data", str(data), "--run.out-dir", str(tmp_path), *TINY,
                              "--run.no-knn-before-training"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and "test" in lines[0]
    assert not list(tmp_path.glob("mocov2-*/checkpoint*.pt"))


def full_disk(monkeypatch, after):
    """torch.save fails with ENOSPC from its ``after``-th call on."""
    import errno

    import fastssl.train.checkpoint as module

    calls, save = [], module.torch.save

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) >= after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(*args, **kwargs)

    monkeypatch.setattr(module.torch, "save", failing)


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_good_one(
    straight, tiny_dataset, tmp_path, capsys, monkeypatch
):
    full_disk(monkeypatch, after=3)  # epoch 1's checkpoint and best.pt are written, epoch 2's is not
    with pytest.raises(SystemExit) as exit_:
        run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(tmp_path), *TINY,
                              "--optim.epochs", "3", "--run.log-every-steps", "2"])
    monkeypatch.undo()
    line = capsys.readouterr().err.strip()
    run_dir = tmp_path / "mocov2-tiny"
    assert exit_.value.code == 2 and "no space left on the device" in line and str(run_dir / "checkpoint.pt") in line
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []  # no temporary left
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["epoch_done"] == 1
    assert run_recipe("mocov2", ["--resume-from", str(run_dir)])["finished"]
    assert_same_weights(run_dir / "checkpoint.pt", straight / "checkpoint.pt")


def test_a_really_full_file_system(tiny_dataset, tmp_path, capsys):
    """A 25 MB tmpfs: room for three 7 MB checkpoints, so the first ones are written and a
    later one does not fit (needs root, as CI runs)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=25m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root and a system that permits it")
    try:
        with pytest.raises(SystemExit) as exit_:
            run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(mount), *TINY,
                                  "--optim.epochs", "30", "--run.keep-checkpoints", "3"])
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_.value.code == 2 and "no space left on the device" in line
        newest, _ = newest_intact(mount / "mocov2-tiny")
        assert newest is not None and torch.load(newest, weights_only=False)["epoch_done"] >= 1
    finally:
        subprocess.run(["umount", str(mount)], check=True)
