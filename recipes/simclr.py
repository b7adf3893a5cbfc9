"""SimCLR as Mini-SSL runs it (pc-cp/Benchmark-Methods-For-MNN).

    accelerate launch recipes/simclr.py --data data/cifar10 [--method.loss nt_xent --method.temperature 0.5]

Sources of the defaults: the same backbone, optimiser, schedule and views as the MoCo v2
recipe (Mini-SSL's main_pretrain_evaluation.sh); cross-view InfoNCE with τ 0.2 and the
512→2048 (BN, ReLU)→128 (BN) head from Mini-SSL's SimCLR.py. The paper's NT-Xent
(2N − 2 negatives) with τ 0.5 is ``--method.loss nt_xent --method.temperature 0.5``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.simclr import SimCLR, SimCLRConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewRecipe, two_views  # noqa: E402


@dataclass(frozen=True)
class Config(TrainConfig):
    method: SimCLRConfig = field(default_factory=SimCLRConfig)


PRESETS = dataset_presets(Config(data=tyro.MISSING))  # type: ignore[arg-type]


def build_method(cfg: Config, backbone) -> SimCLR:
    return SimCLR(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return two_views(cfg.views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
