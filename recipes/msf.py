"""MSF (Mean Shift) with Mini-SSL's recipe (pc-cp/Benchmark-Methods-For-MNN).

    accelerate launch recipes/msf.py --data data/cifar10 [--preset tiny-imagenet]

Sources of the defaults: ResNet-18 with the CIFAR stem, split-BN (8 groups), batch 256,
SGD 0.06×batch/256 momentum 0.9 wd 5e-4, 5 warm-up epochs then cosine, 200 epochs,
top-5 neighbours plus the target itself, EMA 0.99 (constant), memory 4096 of target
embeddings, symmetric loss, shuffled targets, BYOL heads (2048 hidden, 128 out):
Mini-SSL's main_pretrain_evaluation.sh (``--weak``) and MSF.py. Views: the first is
Mini-SSL's strong augmentation, the second (the target's in the first direction) its weak
one, get_weak_augment: RandomResizedCrop scale (0.2, 1) and a horizontal flip with p 0.9
(sic), no colour. Tiny-ImageNet: EMA 0.996, memory 16384, max-pool kept, 64 px views
(Mini-SSL script).

Where sources disagree: the official code (ImageNet) enqueues the target before the search,
so its top-5 counts the target (4 neighbours, Mini-SSL's 5 + 1), is one-directional, and
uses a 1,024,000 memory with weak/weak views; the Mini-SSL README's later fix puts the
second direction before the memory update, which fastssl does for both (memory pushed after
the optimiser step). Mini-SSL's stored MSF.py still enqueues between the two directions.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.msf import MSF, MSFConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewConfig, ViewRecipe, asymmetric_views, weak_view  # noqa: E402

replace = dataclasses.replace



@dataclass(frozen=True)
class Config(TrainConfig):
    method: MSFConfig = field(default_factory=MSFConfig)
    weak_views: ViewConfig = field(default_factory=weak_view)  # the second view (``views`` is the first)


PRESETS = dataset_presets(Config(data=tyro.MISSING))  # type: ignore[arg-type]
# Mini-SSL's Tiny-ImageNet script: momentum 0.996, memory 16384 (also for the 32 px copy).
for name in ("tiny-imagenet", "tiny-imagenet-32"):
    PRESETS[name] = replace(PRESETS[name], method=MSFConfig(momentum=0.996, memory_size=16384))


def build_method(cfg: Config, backbone) -> MSF:
    return MSF(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return asymmetric_views(cfg.views, cfg.weak_views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
