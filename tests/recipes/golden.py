"""Golden values of every recipe: what 3 training steps compute, and every preset's configuration.

    python tests/recipes/golden.py --out FILE                          # measure, write FILE
    python tests/recipes/golden.py --write --because "issue N: why"    # re-record tests/recipes/golden.json

For each registered recipe, 3 steps on a small synthetic data set with the recipe's own
defaults (narrowed to width 8, batch 16 in 2 BN groups) give the training losses and, per
tensor of the method's state (weights, buffers, queues, teachers), its sum and L2 norm.
Beside them, every preset's full configuration (the default preset in full, the others as
their differences from it). ``tests/recipes/test_golden.py`` compares a fresh measurement
with ``golden.json`` at rtol 1e-6, so a refactor that changes what a recipe trains fails.

Numerics are pinned so the values hold on any x86-64 machine with AVX2, not only the one
that recorded them: one thread (reductions are split by thread count), ATen kernels and
oneDNN at AVX2, and MKL's conditional numerical reproducibility at AVX2 — all set in the
environment before torch is imported, which is why this runs as its own process.

A change of golden values must be on purpose: ``--write`` needs ``--because`` naming the
issue, which is recorded against every recipe whose values it changed.
"""

from __future__ import annotations

import os

PINNED = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2",
          "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
os.environ.update(PINNED)  # before torch loads

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path[0:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402
from conftest import make_tensor_dataset  # noqa: E402

from fastssl.config import to_json  # noqa: E402
from fastssl.recipes import get, names  # noqa: E402
from fastssl.recipes.launch import main as run_recipe  # noqa: E402

GOLDEN = Path(__file__).with_name("golden.json")
STEPS = 3
TINY = ["--model.width", "8", "--model.bn-splits", "2", "--optim.batch-size", "16", "--optim.epochs", "1",
        "--run.eval-batch-size", "32", "--run.no-progress-bar", "--run.log-every-steps", "1",
        "--run.no-knn-before-training", "--run.stop-after-steps", str(STEPS)]


def presets_of(name: str) -> dict:
    presets = {preset: to_json(cfg) for preset, cfg in get(name).presets.items()}
    for config in presets.values():
        config.pop("data")  # a preset names no data set
        config.pop("data_verify")  # how the data is checked, not what is trained
    return presets


def train(name: str, data: Path, out: Path, extra: tuple[str, ...] = ()) -> Path:
    """3 steps of recipe ``name``; returns its run folder."""
    run_recipe(name, ["--data", str(data), "--run.out-dir", str(out), "--run.name", name, *TINY, *extra])
    return out / name


def measure(name: str, data: Path, out: Path, teacher: Path) -> dict:
    """A distillation recipe learns from ``teacher``, 3 steps of MoCo v2 on the same data."""
    torch.manual_seed(0)
    run_dir = train(name, data, out, ("--method.teacher", str(teacher)) if is_distiller(name) else ())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["method"]
    # Not the checksum of a distiller's teacher file: the file records its run's timings.
    tensors = {key: [_nine(value.double().sum()), _nine(value.double().norm())] for key, value in state.items()
               if key != "teacher.sha256"}
    return {"losses": losses, "tensors": tensors}


def is_distiller(name: str) -> bool:
    from fastssl.methods.distillation import Distiller

    return issubclass(get(name).method, Distiller)


def _nine(value: torch.Tensor) -> float:
    """Nine significant digits: enough for rtol 1e-6, and a smaller file."""
    return float(f"{value.item():.9g}")


def dumps(record: dict) -> str:
    """JSON with each tensor's [sum, norm] on one line."""
    return re.sub(r"\[\n\s*(\S+),\n\s*(\S+)\n\s*\]", r"[\1, \2]", json.dumps(record, indent=1)) + "\n"


def differences(base: dict, other: dict, prefix: str = "") -> dict:
    """The leaves of ``other`` that differ from ``base``, as dotted names."""
    changed = {}
    for key in sorted(set(base) | set(other)):
        a, b, name = base.get(key), other.get(key), prefix + key
        if isinstance(a, dict) and isinstance(b, dict):
            changed.update(differences(a, b, name + "."))
        elif a != b:
            changed[name] = b
    return changed


def presets_record(name: str) -> dict:
    presets = presets_of(name)
    default, *others = presets
    return {"default": default, "config": presets[default],
            "others": {p: differences(presets[default], presets[p]) for p in others}}


def measure_all() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = make_tensor_dataset(Path(tmp) / "golden", train=64, test=16)
        torch.manual_seed(0)
        teacher = train("mocov2", data, Path(tmp) / "teacher")
        recipes = {}
        for name in names():
            recipes[name] = {**measure(name, data, Path(tmp) / "runs", teacher), "presets": presets_record(name)}
            print(f"{name}: losses {recipes[name]['losses']}", file=sys.stderr)
    assert torch.backends.cpu.get_cpu_capability() == "AVX2", "the pinned environment did not take"
    return {"steps": STEPS, "args": TINY, "pinned_environment": PINNED, "torch": torch.__version__,
            "recipes": recipes}


def changed_recipes(old: dict, new: dict) -> list[str]:
    """Recipes whose measured values or presets differ between two golden records."""
    names = set(old.get("recipes", {})) | set(new["recipes"])
    return sorted(n for n in names if _values(old.get("recipes", {}).get(n)) != _values(new["recipes"].get(n)))


def _values(entry: dict | None) -> object:
    if entry is None:
        return None
    return {k: v for k, v in entry.items() if k != "changed_by"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write a fresh measurement here")
    parser.add_argument("--write", action="store_true", help=f"re-record {GOLDEN.name}")
    parser.add_argument("--because", help="with --write: the issue that changed the recipes on purpose")
    args = parser.parse_args()
    if args.write and not args.because:
        parser.error("--write needs --because 'issue N: what changed on purpose'")
    if not (args.write or args.out):
        parser.error("give --out FILE or --write")
    record = measure_all()
    if args.out:
        args.out.write_text(dumps(record))
    if args.write:
        old = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        changed = changed_recipes(old, record)
        for name, entry in record["recipes"].items():
            previous = old.get("recipes", {}).get(name, {}).get("changed_by", [])
            entry["changed_by"] = [*previous, args.because] if name in changed else previous
        GOLDEN.write_text(dumps(record))
        print(f"{GOLDEN}: {len(changed)} recipes changed: {', '.join(changed) or 'none'}", file=sys.stderr)


if __name__ == "__main__":
    main()
