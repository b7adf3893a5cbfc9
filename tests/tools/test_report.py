"""tools/report.py on hand-made run folders: seeds pooled as mean ± std, table rows, PNGs,
wall-clock time rebuilt from the log; bad input is one error line, status 2, nothing written;
without the [report] extra it says so in one line."""

from __future__ import annotations

import json
import runpy
import statistics
import sys
from pathlib import Path

import pytest
from PIL import Image

from tools import report as tool

ROOT = Path(__file__).resolve().parents[2]
PLOTS = ["curves_vs_epoch.png", "curves_vs_time.png", "throughput.png"]

METRICS = [  # two epochs of two steps, batch 100; logged every step
    {"kind": "eval", "epoch": 0, "knn_student": 20.0, "seconds": 6.0},
    {"kind": "train", "epoch": 0, "step": 1, "images_per_s": 100.0, "train_seconds": 1.0, "loss": 5.0},
    {"kind": "train", "epoch": 0, "step": 2, "images_per_s": 50.0, "train_seconds": 3.0, "loss": 4.0},
    {"kind": "eval", "epoch": 1, "knn_student": 40.0, "seconds": 6.0},
    {"kind": "train", "epoch": 1, "step": 2, "images_per_s": 200.0, "train_seconds": 4.0, "loss": 3.0},  # 2 steps
    {"kind": "eval", "epoch": 2, "knn_student": 50.0, "seconds": 6.0},
]


def make_run(root: Path, name: str, method: str, seed: int, knn: tuple[float, float], images_per_s: float,
             temperature: float = 0.2, linear: dict | None = None, finished: bool = True) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    config = {"data": "/data/cifar10", "resume": False, "optim": {"epochs": 200, "batch_size": 100},
              "run": {"seed": seed, "name": name, "out_dir": str(root), "progress_bar": True},
              "method": {"temperature": temperature}}
    summary = {"method": method, "data": "/data/cifar10", "finished": finished, "config": config,
               "knn": {"student": {"last": knn[0], "best": knn[1]}}, "wall_time_s": 600.0 * seed,
               "images_per_s": images_per_s, "peak_memory_mib": 2048.0, "device": "NVIDIA H100", "processes": 1}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS))
    if linear is not None:
        (folder / "linear.json").write_text(json.dumps(linear))
    return folder


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    protocol = lambda last, best: {"mini-ssl": {"protocol": "mini-ssl", "last": last, "best": best}}
    make_run(root, "moco-s1", "mocov2", 1, (80.0, 81.0), 1000.0, linear=protocol(88.0, 89.0))
    make_run(root, "moco-s2", "mocov2", 2, (82.0, 83.0), 1100.0, linear=protocol(90.0, 91.0))
    make_run(root, "moco-s3", "mocov2", 3, (84.0, 85.0), 1200.0)
    make_run(root, "moco-t05", "mocov2", 1, (70.0, 75.0), 1000.0, temperature=0.5, finished=False)
    make_run(root, "simclr-s1", "simclr", 1, (85.0, 86.0), 900.0, linear={"fast": {"protocol": "fast",
                                                                                    "test_acc": 86.5}})
    return root


def rows(markdown: str) -> dict[str, list[str]]:
    """Table rows by their first three cells (method, data set, setting)."""
    table = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("| ")]
    return {" ".join(c.strip() for c in cells[:3] if c.strip()): [c.strip() for c in cells] for cells in table[1:]}


def test_seeds_pool_into_mean_and_std(runs, tmp_path, capsys):
    out = tmp_path / "report"
    markdown = tool.main([str(runs), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == sorted([*PLOTS, "results.md"])  # no temporary left
    assert (out / "results.md").read_text() == markdown
    table = rows(markdown)
    header = [c.strip() for c in markdown.splitlines()[2].strip("|").split("|")]
    moco = dict(zip(header, table["mocov2 cifar10 method.temperature=0.2"], strict=True))
    std = statistics.stdev([80.0, 82.0, 84.0])  # the sample deviation: 2
    assert moco["kNN last (best) %"] == f"82.00 ± {std:.2f} (83.00 ± {std:.2f})"
    assert moco["linear last (best) %"] == f"89.00 ± {statistics.stdev([88.0, 90.0]):.2f} (90.00 ± 1.41) [2 of 3]"
    assert moco["n"] == "3" and moco["images/s"] == "1100 ± 100" and moco["minutes"] == "20.0 ± 10.0"
    assert moco["epochs"] == "200" and moco["batch"] == "100" and moco["peak memory GiB"] == "2.00 ± 0.00"
    assert moco["device"] == "NVIDIA H100 ×1"
    other = dict(zip(header, table["mocov2 cifar10 method.temperature=0.5"], strict=True))
    assert other["kNN last (best) %"] == "70.00 (75.00)" and other["n"] == "1" and other["epochs"] == "200†"
    simclr = dict(zip(header, table["simclr cifar10"], strict=True))
    assert simclr["linear last (best) %"] == "86.50 (fast probe)" and simclr["setting"] == ""
    for name in PLOTS:
        with Image.open(out / name) as image:
            assert image.format == "PNG"
    assert "mocov2" in capsys.readouterr().out


def test_wall_clock_is_rebuilt_from_the_log(runs):
    run = tool.read_run(runs / "moco-s1")
    curves = tool.curves(run)
    assert sorted(curves) == ["knn_student", "loss"]  # no teacher, no probe logged
    # eval 6 s; step 1: 100 images at 100/s; step 2: 100 at 50/s; eval 6 s; steps 1–2 of epoch 1: 200 at 200/s; eval
    assert list(curves["loss"]) == [0.5, 1.0, 2.0] and [v for _, v in curves["loss"].values()] == [5.0, 4.0, 3.0]
    assert [m for m, _ in curves["loss"].values()] == pytest.approx([7 / 60, 9 / 60, 16 / 60])
    assert list(curves["knn_student"]) == [0, 1, 2]
    assert [v for _, v in curves["knn_student"].values()] == [20.0, 40.0, 50.0]
    assert [m for m, _ in curves["knn_student"].values()] == pytest.approx([6 / 60, 15 / 60, 22 / 60])


def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys):
    out = tmp_path / "report"
    broken = tmp_path / "broken"
    make_run(broken, "a", "mocov2", 1, (1.0, 1.0), 1.0)
    (broken / "a" / "summary.json").write_text("{truncated")
    bad_metrics = tmp_path / "bad_metrics"
    make_run(bad_metrics, "a", "mocov2", 1, (1.0, 1.0), 1.0)
    with open(bad_metrics / "a" / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "tra')
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.md").write_text("")
    for args, expected in [
        ([str(tmp_path / "missing")], "no such folder"),
        ([str(tmp_path / "empty")], "no summary.json"),
        ([str(broken)], "summary.json: unreadable"),
        ([str(bad_metrics)], "metrics.jsonl:7: unreadable"),
        ([str(runs), "--out", str(tmp_path / "file.md")], "not a folder"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            tool.main([*args, *(["--out", str(out)] if "--out" not in args else [])])
        assert exit_.value.code == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("report.py: error:") and "\n" not in err and expected in err, (args, err)
    assert not out.exists() and (tmp_path / "file.md").read_text() == ""


def test_without_the_report_extra_it_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script rewrites sys.path[0]
    monkeypatch.setattr(sys, "argv", ["report.py"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "tools" / "report.py"), run_name="__main__")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == "report.py: error: needs the [report] extra (matplotlib is missing): pip install -e '.[report]'\n"


def test_runs_differing_only_in_bookkeeping_pool_and_a_checkpoint_names_its_run(tmp_path):
    first = make_run(tmp_path, "a", "mocov2", 1, (80.0, 81.0), 1000.0)
    second = make_run(tmp_path, "b", "mocov2", 2, (82.0, 83.0), 1000.0)
    summary = json.loads((second / "summary.json").read_text())
    summary["config"]["run"].update(log_every_steps=5, compile=True)  # how it was logged and run, not what
    (second / "summary.json").write_text(json.dumps(summary))
    (first / "checkpoint.pt").write_bytes(b"")
    (cell,) = tool.group(tool.find_runs((first / "checkpoint.pt", second)))
    assert len(cell.runs) == 2 and cell.setting == ""


def test_distilled_students_sit_beside_the_same_student_alone_and_their_teacher(tmp_path):
    root = tmp_path / "runs"

    def student(name: str, method: str, arch: str, knn: float, teacher: str | None = None) -> None:
        folder = make_run(root, name, method, 1, (knn, knn), 500.0)
        summary = json.loads((folder / "summary.json").read_text())
        summary["config"]["model"] = {"arch": arch}
        if teacher is not None:
            summary["config"]["method"]["teacher"] = teacher
            summary["knn"]["teacher"] = {"last": 70.0, "best": 71.0}
        (folder / "summary.json").write_text(json.dumps(summary))

    student("seed-mnv2", "seed", "mobilenet_v2", 55.0, "/runs/mocov2-r18/checkpoint.pt")
    student("moco-mnv2", "mocov2", "mobilenet_v2", 45.0)
    student("moco-r18", "mocov2", "resnet18", 70.0)
    markdown = tool.main([str(root), "--out", str(tmp_path / "report")])
    section = markdown.split("## Distilled students")[1]
    assert "| mobilenet_v2 | cifar10 | seed | 55.00 | mocov2 45.00 | mocov2-r18 | 70.00 |" in section
    assert "resnet18 70" not in section  # another student architecture is not "the same student"
