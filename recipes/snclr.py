"""SNCLR with Mini-SSL's recipe (pc-cp/Benchmark-Methods-For-MNN).

    accelerate launch recipes/snclr.py --data data/cifar10 [--preset tiny-imagenet]

Sources of the defaults: ResNet-18 with the CIFAR stem, split-BN (8 groups), batch 256,
SGD 0.06×batch/256 momentum 0.9 wd 5e-4, 5 warm-up epochs then cosine, 200 epochs,
τ 0.2, top-5 neighbours, EMA 0.99 (constant), memory 4096 of target embeddings, symmetric
loss, shuffled targets: Mini-SSL's main_pretrain_evaluation.sh and SNCLR.py (heads as
there: 3-layer projector and 2-layer predictor, 2048 hidden, 128 out, last BN without
affine). Views: both the strong Mini-SSL augmentation (data_public.py; its SNCLR-specific
aug1/aug2 are defined but unused by main_pretrain.py). Tiny-ImageNet: EMA 0.996, memory
16384, max-pool kept, 64 px views (Mini-SSL script).

Where sources disagree: the official code (ViT-S, ImageNet) uses a 128,000 memory, top-30,
an EMA on a cosine schedule, AdamW, and sums the two directions scaled by 2τ; Mini-SSL
averages them unscaled, as fastssl does.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.snclr import SNCLR, SNCLRConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewRecipe, two_views  # noqa: E402

replace = dataclasses.replace


@dataclass(frozen=True)
class Config(TrainConfig):
    method: SNCLRConfig = field(default_factory=SNCLRConfig)


PRESETS = dataset_presets(Config(data=tyro.MISSING))  # type: ignore[arg-type]
# Mini-SSL's Tiny-ImageNet script: momentum 0.996, memory 16384 (also for the 32 px copy).
for name in ("tiny-imagenet", "tiny-imagenet-32"):
    PRESETS[name] = replace(PRESETS[name], method=SNCLRConfig(momentum=0.996, memory_size=16384))


def build_method(cfg: Config, backbone) -> SNCLR:
    return SNCLR(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return two_views(cfg.views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
