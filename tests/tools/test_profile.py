import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def profile(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "profile.py"), *args], capture_output=True, text=True)


def test_profile_times_every_stage_and_writes_json_and_trace(tiny_dataset, tmp_path):
    out, trace = tmp_path / "profile.json", tmp_path / "trace.json"
    result = profile("--data", str(tiny_dataset), "--recipe", "simclr", "--batch-size", "16", "--width", "8",
                     "--steps", "1", "--out", str(out), "--trace", str(trace), "--workers", "0")
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())["runs"][0]
    assert set(record["stages_ms"]) == {"read/decode", "views", "forward+loss", "backward", "optimiser"}
    assert all(ms > 0 for ms in record["stages_ms"].values()) and record["whole_step_ms"] > 0
    assert record["bottleneck"] in record["stages_ms"] and f"bottleneck: {record['bottleneck']}" in result.stdout
    assert "traceEvents" in json.loads(trace.read_text())
    assert json.loads(out.read_text())["dataloader_pil_images_per_s"] > 0


def test_profile_bad_input_is_one_line(tiny_dataset, tmp_path):
    for args, expected in [(["--data", str(tmp_path / "none")], "no such directory"),
                           (["--data", str(tiny_dataset), "--recipe", "nope"], "--recipe nope")]:
        result = profile(*args)
        assert result.returncode == 2
        assert result.stderr.strip().count("\n") == 0 and expected in result.stderr


def test_profile_data_only_times_read_and_views(tiny_dataset, tmp_path):
    out = tmp_path / "profile.json"
    result = profile("--data", str(tiny_dataset), "--recipe", "mocov2", "--batch-size", "16", "--steps", "1",
                     "--out", str(out), "--data-only", "--no-baseline")
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())["runs"][0]
    assert set(record["stages_ms"]) == {"read/decode", "views"} and record["whole_step_ms"] is None
    assert "| data stage |" in result.stdout
