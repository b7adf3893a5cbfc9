"""ReSSL with Mini-SSL's recipe (pc-cp/Benchmark-Methods-For-MNN).

    accelerate launch recipes/ressl.py --data data/cifar10 [--preset tiny-imagenet]

Sources of the defaults: ResNet-18 with the CIFAR stem, split-BN (8 groups), batch 256,
SGD 0.06×batch/256 momentum 0.9 wd 5e-4, 5 warm-up epochs then cosine, 200 epochs,
τ_t 0.04, EMA 0.99 (constant), memory 4096 of teacher embeddings, one direction, shuffled
teacher batch: Mini-SSL's main_pretrain_evaluation.sh (``--weak``, no ``--symmetric``);
τ_s 0.1 and the 512→2048→128 projector without BN: Mini-SSL's ReSSL.py (τ_s also
solo-learn's). Views: the first (the student's) is Mini-SSL's strong augmentation, the second
(the teacher's) its weak one, get_weak_augment: RandomResizedCrop scale (0.2, 1) and a
horizontal flip with p 0.9 (sic), no colour. Tiny-ImageNet: EMA 0.996, memory 16384,
max-pool kept, 64 px views (Mini-SSL script).

Where sources disagree: solo-learn's CIFAR config uses a 4096-wide 256-d projector, a
65,536 memory, EMA 0.99 → 1 (cosine), SGD 0.05 wd 1e-4 for 1000 epochs, crops of scale
(0.08, 1) and a weak flip of p 0.5; the official ReSSL code (ImageNet) a flip of p 0.5.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.ressl import ReSSL, ReSSLConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewConfig, ViewRecipe, asymmetric_views, weak_view  # noqa: E402

replace = dataclasses.replace



@dataclass(frozen=True)
class Config(TrainConfig):
    method: ReSSLConfig = field(default_factory=ReSSLConfig)
    weak_views: ViewConfig = field(default_factory=weak_view)  # the teacher's view (``views``: the student's)


PRESETS = dataset_presets(Config(data=tyro.MISSING))  # type: ignore[arg-type]
# Mini-SSL's Tiny-ImageNet script: momentum 0.996, memory 16384 (also for the 32 px copy).
for name in ("tiny-imagenet", "tiny-imagenet-32"):
    PRESETS[name] = replace(PRESETS[name], method=ReSSLConfig(momentum=0.996, memory_size=16384))


def build_method(cfg: Config, backbone) -> ReSSL:
    return ReSSL(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return asymmetric_views(cfg.views, cfg.weak_views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
