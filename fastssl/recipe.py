"""What every recipe script does after choosing its method: parse, train, report."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from fastssl.cli import fail, parse_with_presets
from fastssl.config import TrainConfig
from fastssl.methods.base import Method
from fastssl.models.resnet import ResNet
from fastssl.train.loop import RunError, Trainer, standard_error_pct
from pipelines.dataset import DatasetError
from pipelines.views import ViewRecipe

C = TypeVar("C", bound=TrainConfig)


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


def run_recipe(
    config_type: type[C],
    presets: dict[str, C],
    method_name: str,
    build_method: Callable[[C, ResNet], Method],
    build_views: Callable[[C], ViewRecipe],
    args: list[str] | None = None,
    program: str = "recipe",
) -> dict[str, Any]:
    cfg = parse_with_presets(config_type, presets, args, program)
    try:
        trainer = Trainer(cfg, method_name, lambda backbone: build_method(cfg, backbone), build_views(cfg))
        summary = trainer.fit()
    except (RunError, DatasetError, ValueError) as error:
        fail(program, error)
    if trainer.accelerator.is_main_process:
        print(format_summary(summary))
        print(f"  run folder: {trainer.run_dir}")
    return json.loads(json.dumps(summary))


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def load_recipe(name: str) -> ModuleType:
    """Import ``recipes/<name>.py`` (a script folder, not a package) as a module."""
    path = RECIPES / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no recipe {path}")
    spec = importlib.util.spec_from_file_location(f"recipes.{name}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]  # dataclasses look it up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module
