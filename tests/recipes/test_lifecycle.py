"""A run remembers its configuration: --resume with only what identifies the run, refused
changes, --resume-override in the history, --resume-from a moved folder, --config relaunches."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fastssl.recipes.launch import main as run_recipe
from fastssl.train.checkpoint import save_checksummed
from tests.conftest import make_tensor_dataset

ROOT = Path(__file__).resolve().parents[2]
# Settings far from the defaults, so a resume that forgot them would build another network.
TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16", "--method.queue-size", "32",
        "--run.eval-batch-size", "32", "--run.no-progress-bar", "--run.log-every-steps", "1",
        "--run.knn-every-epochs", "1", "--optim.epochs", "2"]


def refused(capsys, *args, recipe="mocov2"):
    """The one line a refused command prints (status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_recipe(recipe, list(args))
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith(f"{recipe}.py: error:"), lines
    return lines[0]


def weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["method"]


def records(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture(scope="module")
def stopped(tiny_dataset, tmp_path_factory):
    """A run of non-default settings stopped after 3 of its 8 steps, and an uninterrupted
    run of the same settings."""
    out = tmp_path_factory.mktemp("lifecycle")
    run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(out / "straight"), *TINY])
    run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(out / "stopped"), *TINY,
                          "--run.stop-after-steps", "3"])
    return out


def fresh_copy(stopped, tmp_path):
    """A copy of the stopped run, so each test resumes its own."""
    shutil.copytree(stopped / "stopped", tmp_path / "stopped")
    return tmp_path / "stopped"


def test_resume_needs_only_what_identifies_the_run(stopped, tiny_dataset, tmp_path):
    out = fresh_copy(stopped, tmp_path)
    summary = run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(out), "--resume"])
    assert summary["finished"] and summary["config"]["model"]["width"] == 8
    (resume,) = records(out / "mocov2-tiny", "resume")  # every resume is in the run's history
    assert resume["changes"] == {} and (resume["epoch"], resume["step"]) == (0, 3) and summary["resumes"] == [resume]
    straight = weights(stopped / "straight" / "mocov2-tiny")
    for key, value in weights(out / "mocov2-tiny").items():
        torch.testing.assert_close(value, straight[key], rtol=0, atol=0, msg=key)


def test_a_change_to_the_experiment_is_refused_naming_each_option_and_both_values(
    stopped, tiny_dataset, tmp_path, capsys
):
    out = fresh_copy(stopped, tmp_path)
    before = weights(out / "mocov2-tiny")
    files = {name: (out / "mocov2-tiny" / name).read_bytes() for name in ("config.yaml", "metrics.jsonl")}
    line = refused(capsys, "--data", str(tiny_dataset), "--run.out-dir", str(out), "--resume",
                   "--model.width", "16", "--optim.lr-per-256", "0.1", "--optim.epochs", "1")
    assert "--model.width 8 → 16" in line and "--optim.lr-per-256 0.06 → 0.1" in line and "--optim.epochs 2 → 1" in line
    assert "--resume-override" in line
    after = weights(out / "mocov2-tiny")
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing trained, nothing written
    assert files == {name: (out / "mocov2-tiny" / name).read_bytes() for name in files}
    other = make_tensor_dataset(tmp_path / "other", seed=1)  # another data set
    line = refused(capsys, "--data", str(other), "--resume-from", str(out / "mocov2-tiny"))
    assert f"--data {tiny_dataset} → {other}" in line


def test_epochs_may_grow_and_logging_may_change(stopped, tiny_dataset, tmp_path):
    out = fresh_copy(stopped, tmp_path)
    summary = run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(out), "--resume",
                                    "--optim.epochs", "3", "--run.log-every-steps", "2"])
    assert summary["finished"] and summary["epochs_done"] == 3
    (resume,) = records(out / "mocov2-tiny", "resume")
    assert resume["changes"] == {"optim.epochs": [2, 3], "run.log_every_steps": [1, 2]} and not resume["override"]
    assert summary["resumes"] == [resume]


def test_an_override_is_recorded_in_the_run_history(stopped, tiny_dataset, tmp_path):
    out = fresh_copy(stopped, tmp_path)
    summary = run_recipe("mocov2", ["--data", str(tiny_dataset), "--run.out-dir", str(out), "--resume",
                                    "--resume-override", "--optim.lr-per-256", "0.03"])
    (resume,) = summary["resumes"]
    assert resume["override"] and resume["changes"] == {"optim.lr_per_256": [0.06, 0.03]}
    assert (resume["epoch"], resume["step"]) == (0, 3)
    assert yaml.safe_load((out / "mocov2-tiny" / "config.yaml").read_text())["config"]["optim"]["lr_per_256"] == 0.03


def test_resume_from_a_moved_run_folder_and_data_set(stopped, tiny_dataset, tmp_path, capsys, monkeypatch):
    moved = tmp_path / "elsewhere"
    shutil.copytree(stopped / "stopped" / "mocov2-tiny", moved / "runs" / "mine")
    shutil.copytree(tiny_dataset, moved / "data")
    # The run's relative path to its data set no longer holds; the absolute one still does.
    summary = run_recipe("mocov2", ["--resume-from", str(moved / "runs" / "mine")])
    assert summary["finished"] and summary["config"]["run"]["name"] == "mine"
    # With the data set moved beside it and the original gone, the relative path is followed.
    state = torch.load(moved / "runs" / "mine" / "checkpoint.pt", weights_only=False)
    state["config"]["data"] = str(tmp_path / "gone")
    state["relative_paths"]["data"] = "../../data"
    save_checksummed(state, moved / "runs" / "mine" / "checkpoint.pt")
    monkeypatch.chdir(tmp_path)
    again = run_recipe("mocov2", ["--resume-from", str(moved / "runs" / "mine"), "--optim.epochs", "3"])
    assert again["finished"] and again["data"] == str(moved / "data")
    shutil.rmtree(moved / "data")
    line = refused(capsys, "--resume-from", str(moved / "runs" / "mine"), "--optim.epochs", "4")
    assert str(moved / "data") in line and str(moved / "runs" / "mine" / "../../data") in line


def test_a_checkpoint_of_the_earlier_format_resumes_from_its_file(stopped, tmp_path):
    out = fresh_copy(stopped, tmp_path)
    path = out / "mocov2-tiny" / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    state["config"]["resume"] = False  # settings until 2026-12
    state["config"]["run"]["tensorboard"] = False
    del state["config"]["run"]["trackers"]
    for key in ("data_meta_sha256", "relative_paths", "window", "metrics_lines", "last_train", "best"):
        del state[key]
    torch.save(state, path)
    path.with_name("checkpoint.pt.sha256").unlink()  # no checksums then
    summary = run_recipe("mocov2", ["--resume-from", str(path)])  # a checkpoint file names its run folder
    assert summary["finished"] and summary["epochs_done"] == 2


def test_a_data_set_moved_on_its_own_is_named_again_with_data(stopped, tiny_dataset, tmp_path):
    out = fresh_copy(stopped, tmp_path)
    moved = shutil.copytree(tiny_dataset, tmp_path / "moved" / "tiny")
    state = torch.load(out / "mocov2-tiny" / "checkpoint.pt", weights_only=False)
    state["config"]["data"] = str(tmp_path / "was-here")  # as if the data set had left its old place
    save_checksummed(state, out / "mocov2-tiny" / "checkpoint.pt")
    summary = run_recipe("mocov2", ["--resume-from", str(out / "mocov2-tiny"), "--data", str(moved)])
    assert summary["finished"] and summary["data"] == str(moved)
    assert summary["resumes"][0]["changes"] == {}  # the same data set (its meta.json), found anew


def test_config_relaunches_the_same_run(stopped, tmp_path, monkeypatch):
    source = stopped / "straight" / "mocov2-tiny"
    saved = yaml.safe_load((source / "config.yaml").read_text())
    assert saved["recipe"] == "mocov2" and saved["config"]["model"]["width"] == 8
    assert Path(saved["config"]["data"]).is_absolute()
    # From another directory, with only a new run name on top of the saved settings.
    monkeypatch.chdir(tmp_path)
    run_recipe("mocov2", ["--config", str(source / "config.yaml"), "--run.out-dir", ".", "--run.name", "again"])
    losses = [r["loss"] for r in records(source, "train")]
    assert losses and [r["loss"] for r in records(tmp_path / "again", "train")] == losses
    # A stopped run's stop option is not part of what --config relaunches.
    stopped_config = stopped / "stopped" / "mocov2-tiny" / "config.yaml"
    assert run_recipe("mocov2", ["--config", str(stopped_config), "--run.out-dir", ".", "--run.name", "on"])["finished"]


def test_launch_options_that_do_not_fit_together_are_refused(stopped, tiny_dataset, tmp_path, capsys):
    out = fresh_copy(stopped, tmp_path)
    identify = ["--data", str(tiny_dataset), "--run.out-dir", str(out)]
    assert "--preset" in refused(capsys, *identify, "--resume", "--preset", "cifar100")
    assert "--config" in refused(capsys, *identify, "--resume", "--config", str(out / "mocov2-tiny"))
    assert "--resume-override" in refused(capsys, *identify, "--run.name", "x", "--resume-override")
    assert "already holds a run" in refused(capsys, *identify)
    config = str(out / "mocov2-tiny" / "config.yaml")
    assert "a mocov2 run; relaunch it with recipes/mocov2.py" in refused(capsys, "--config", config, recipe="byol")


def test_the_shim_runs_from_any_directory(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / "mocov2.py"), "--help"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "presets (--preset NAME" in result.stdout and "--method.queue-size" in result.stdout
