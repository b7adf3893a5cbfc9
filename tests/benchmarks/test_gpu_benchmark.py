"""The GPU benchmark runs end to end on the CPU at toy size, so a GPU lease is not spent
finding its bugs; what it measures there is only checked to be present and plausible."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOY = ["--batch-size", "16", "--width", "8", "--warmup-steps", "1", "--baseline-steps", "1", "--bare-steps", "1",
       "--workers", "0"]


def benchmark(*args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), *args], capture_output=True, text=True)


def test_measures_every_figure_of_the_table(tiny_dataset, tmp_path):
    result = benchmark("--data", str(tiny_dataset), "--methods", "mocov2", "--out", str(tmp_path / "gpu"), *TOY)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "gpu.json").read_text())
    r = record["results"]["mocov2"]
    assert record["device"] == "cpu" and r["mfu"] is None and r["host_syncs_per_step"] is None
    assert r["flops_per_step"] > 0 and r["seconds_per_epoch"] > 0 and r["warmup_seconds"] > 0
    assert r["images_per_s"] == 4 * 16 / r["seconds_per_epoch"]  # 64 images: 4 steps of 16
    assert r["vs_bare"] > 0 and r["plain_baseline_seconds_per_epoch"] > 0 and 0 < r["knn_share_every_5_epochs"] < 1
    assert set(r["stages_ms_uncompiled"]) == {"read/decode", "views", "forward+loss", "backward", "optimiser"}
    table = (tmp_path / "gpu.md").read_text()
    assert table.count("| mocov2 |") == 1 and f"| {r['seconds_per_epoch']:.2f} |" in table


def test_methods_past_the_budget_are_listed_as_skipped(tiny_dataset, tmp_path):
    result = benchmark("--data", str(tiny_dataset), "--methods", "simclr", "byol", "--budget-minutes", "0",
                       "--out", str(tmp_path / "gpu"), *TOY)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "gpu.json").read_text())["results"]
    assert set(results) == {"simclr", "byol"} and all("skipped" in r for r in results.values())
    assert (tmp_path / "gpu.md").read_text().count("skipped") == 2
