"""SCE with Mini-SSL's recipe (pc-cp/Benchmark-Methods-For-MNN).

    accelerate launch recipes/sce.py --data data/cifar10 [--preset tiny-imagenet]

Sources of the defaults: ResNet-18 with the CIFAR stem, split-BN (8 groups), batch 256,
SGD 0.06×batch/256 momentum 0.9 wd 5e-4, 5 warm-up epochs then cosine, 200 epochs,
τ_m 0.05, EMA 0.99 (constant), memory 4096 of teacher embeddings, symmetric loss, shuffled
teacher batch: Mini-SSL's main_pretrain_evaluation.sh (``--weak --symmetric``); τ 0.1,
λ 0.5 and the 512→2048→256 projector without BN: Mini-SSL's SCE.py (τ and λ also SCE's
own configs). Views: the first is Mini-SSL's strong augmentation, the second (the
teacher's in the first direction) its weak one, get_weak_augment: RandomResizedCrop scale
(0.2, 1) and a horizontal flip with p 0.9 (sic), no colour. Tiny-ImageNet: EMA 0.996,
memory 16384, max-pool kept, 64 px views (Mini-SSL script). Both directions see the memory
as it was before the step (Mini-SSL's SCE.py after its fix of 21 Nov 2023).

Where sources disagree: SCE's own CIFAR-10 config (CEA-LIST/SCE) has the same optimiser,
schedule, τ, τ_m, λ, memory and EMA, but one direction (sym False), a 512→512 (BN, ReLU)→128
projector and a weak flip of p 0.5. SCE's and Mini-SSL's code give the positive's teacher
slot a similarity of 0 instead of masking it (fastssl masks it, as Eq. 5; the difference is
negligible at τ_m 0.05).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.sce import SCE, SCEConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewConfig, ViewRecipe, asymmetric_views, weak_view  # noqa: E402

replace = dataclasses.replace



@dataclass(frozen=True)
class Config(TrainConfig):
    method: SCEConfig = field(default_factory=SCEConfig)
    weak_views: ViewConfig = field(default_factory=weak_view)  # the second view (``views`` is the first)


PRESETS = dataset_presets(Config(data=tyro.MISSING))  # type: ignore[arg-type]
# Mini-SSL's Tiny-ImageNet script: momentum 0.996, memory 16384 (also for the 32 px copy).
for name in ("tiny-imagenet", "tiny-imagenet-32"):
    PRESETS[name] = replace(PRESETS[name], method=SCEConfig(momentum=0.996, memory_size=16384))


def build_method(cfg: Config, backbone) -> SCE:
    return SCE(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return asymmetric_views(cfg.views, cfg.weak_views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
