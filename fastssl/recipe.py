"""What every recipe script does after choosing its method: parse, train, report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from fastssl.cli import fail, parse_with_presets
from fastssl.config import TrainConfig
from fastssl.train.loop import RunError, Trainer, standard_error_pct
from pipelines.dataset import DatasetError


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['method']} on {summary['data']}: {summary['epochs_done']} epochs"
             + ("" if summary["finished"] else " (stopped early; --resume continues)")]
    count = summary["knn_test_images"]
    for name, knn in summary["knn"].items():
        parts = []
        if "before_training" in knn:
            parts.append(f"before {knn['before_training']:.2f}")
        if "last" in knn:
            parts.append(f"last {knn['last']:.2f} (epoch {knn['last_epoch']})")
            parts.append(f"best {knn['best']:.2f} (epoch {knn['best_epoch']})")
        if "before_training" in knn and "last" in knn:
            gain = knn["last"] - knn["before_training"]
            se = standard_error_pct(knn["last"], count)
            parts.append(f"gain {gain:+.2f} = {gain / se:.1f} standard errors")
        lines.append(f"  kNN {name:8s} % on {count} test images: " + ", ".join(parts))
    if summary["online_probe_test"] is not None:
        lines.append(f"  online linear probe test %: {summary['online_probe_test']:.2f}")
    lines.append(
        f"  {summary['images_per_s']:.0f} images/s training, wall time {summary['wall_time_s']:.0f} s, "
        f"peak memory {summary['peak_memory_mib']:.0f} MiB ({summary['peak_memory_kind']}), "
        f"{summary['device']}, {summary['mixed_precision']} precision"
    )
    return "\n".join(lines)


def recipe_name(module: ModuleType) -> str:
    return Path(module.__file__).stem  # type: ignore[arg-type]


def build_trainer(module: ModuleType, cfg: TrainConfig) -> Trainer:
    """The trainer of recipe ``module`` (its ``build_method`` and ``build_views``) for ``cfg``."""
    return Trainer(cfg, recipe_name(module), lambda backbone: module.build_method(cfg, backbone),
                   module.build_views(cfg))


def run_recipe(module: ModuleType, args: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line against ``module``'s ``Config`` and ``PRESETS``, train, print
    the summary. A recipe module defines ``Config``, ``PRESETS``, ``build_method(cfg,
    backbone)`` and ``build_views(cfg)``."""
    program = f"{recipe_name(module)}.py"
    cfg = parse_with_presets(module.Config, module.PRESETS, args, program)
    try:
        trainer = build_trainer(module, cfg)
        summary = trainer.fit()
    except (RunError, DatasetError, ValueError, ImportError) as error:
        fail(program, error)
    if trainer.accelerator.is_main_process:
        print(format_summary(summary))
        print(f"  run folder: {trainer.run_dir}")
    return json.loads(json.dumps(summary))


ROOT = Path(__file__).resolve().parents[1]


def load_recipe(name: str) -> ModuleType:
    """Import ``recipes/<name>.py`` (a script folder, not a package) as a module."""
    return load_script("recipes", name)


def load_script(folder: str, name: str) -> ModuleType:
    """Import the script ``<folder>/<name>.py`` of the repository as ``<folder>.<name>``."""
    path = ROOT / folder / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no {folder[:-1]} {path}")
    spec = importlib.util.spec_from_file_location(f"{folder}.{name}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]  # dataclasses look it up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module
