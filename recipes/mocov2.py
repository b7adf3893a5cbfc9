"""MoCo v2 with Mini-SSL's recipe (pc-cp/Benchmark-Methods-For-MNN).

    accelerate launch recipes/mocov2.py --data data/cifar10 [--preset tiny-imagenet] [--optim.epochs 100]

Sources of the defaults: ResNet-18 with the CIFAR stem, split-BN (8 groups), batch 256,
SGD 0.06×batch/256 momentum 0.9 wd 5e-4, 5 warm-up epochs then cosine, 200 epochs,
τ 0.2, m 0.99, queue 4096, symmetric loss: Mini-SSL's main_pretrain_evaluation.sh and
code. Views: Mini-SSL's data_public.py (the MoCo v2 paper's augmentation at 32 px).
Tiny-ImageNet: m 0.996, queue 16384, max-pool kept, 64 px views (Mini-SSL script).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import ModelConfig, OptimConfig, RunConfig, TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.mocov2 import MoCoV2, MoCoV2Config  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewRecipe, two_views  # noqa: E402

replace = dataclasses.replace


@dataclass(frozen=True)
class Config(TrainConfig):
    method: MoCoV2Config = field(default_factory=MoCoV2Config)


PRESETS = dataset_presets(Config(data=tyro.MISSING))  # type: ignore[arg-type]
# Mini-SSL's Tiny-ImageNet script: momentum 0.996, queue 16384 (also for the 32 px copy).
for name in ("tiny-imagenet", "tiny-imagenet-32"):
    PRESETS[name] = replace(PRESETS[name], method=MoCoV2Config(momentum=0.996, queue_size=16384))
# The README's first command: a short schedule on the embedded CIFAR-10 sample that fits
# ~10 minutes on 2 CPU cores (fastssl-tuned: narrow ResNet-18, short schedule). Batch 64 in
# 2 BN groups of 32 (Mini-SSL's group size) at Mini-SSL's lr 0.06; queue 1024 < 5,000
# training images − one batch.
PRESETS["demo"] = replace(
    PRESETS["cifar10"],
    model=ModelConfig(width=16, bn_splits=2),
    optim=OptimConfig(epochs=8, batch_size=64, lr_per_256=0.24, warmup_epochs=1),
    method=MoCoV2Config(queue_size=1024),
    run=RunConfig(name="demo-mocov2", knn_every_epochs=4, log_every_steps=10),
)


def build_method(cfg: Config, backbone) -> MoCoV2:
    return MoCoV2(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return two_views(cfg.views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
