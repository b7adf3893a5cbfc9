"""Every recipe trains what it trained when its golden values were recorded: the losses of
3 steps and the sum and norm of every tensor of the method's state at rtol 1e-6, and every
preset's configuration exactly (``golden.py`` says how they are measured and re-recorded)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastssl.recipes import names

HERE = Path(__file__).parent
GOLDEN = json.loads((HERE / "golden.json").read_text())


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden") / "measured.json"
    command = [sys.executable, str(HERE / "golden.py"), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def close(a: float, b: float, scale: float = 0.0) -> bool:
    """Within rtol 1e-6 (a sum near 0 is compared against its tensor's norm instead)."""
    return abs(a - b) <= 1e-6 * max(abs(b), scale)


def test_every_recipe_has_golden_values():
    assert sorted(GOLDEN["recipes"]) == names()


@pytest.mark.parametrize("name", sorted(GOLDEN["recipes"]))
def test_recipe_trains_as_recorded(name, measured):
    golden, now = GOLDEN["recipes"][name], measured["recipes"][name]
    changed_by = "; ".join(golden["changed_by"])
    assert len(now["losses"]) == len(golden["losses"]) == GOLDEN["steps"]
    for step, (a, b) in enumerate(zip(now["losses"], golden["losses"], strict=True)):
        assert close(a, b), f"{name}: step {step + 1} loss {a} != {b} (golden values from: {changed_by})"
    assert now["tensors"].keys() == golden["tensors"].keys(), f"{name}: the method's state has other tensors"
    wrong = [key for key, ((s, n), (gs, gn)) in ((k, (now["tensors"][k], v)) for k, v in golden["tensors"].items())
             if not (close(s, gs, gn) and close(n, gn))]
    assert not wrong, f"{name}: {len(wrong)} tensors differ after {GOLDEN['steps']} steps, e.g. {wrong[:3]}"
    assert now["presets"] == golden["presets"], f"{name}: presets differ (golden values from: {changed_by})"
