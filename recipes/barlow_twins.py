"""Barlow Twins with solo-learn's CIFAR recipe (vturrisi/solo-learn, scripts/pretrain/cifar/barlow.yaml).

    accelerate launch recipes/barlow_twins.py --data data/cifar10 [--preset cifar100]

Sources of the defaults:

- Loss: λ 0.0051 (the authors' code and solo-learn; the paper's text and lightly: 5·10⁻³);
  loss × 0.1 (solo-learn's CIFAR barlow.yaml; solo-learn's method default 0.024 and loss
  function default 0.025; the paper scales nothing).
- Projector 512→2048 (BN, ReLU)→2048 (BN, ReLU)→2048 (solo-learn CIFAR; the paper's
  ImageNet projector is 8192 wide).
- Optimiser: LARS, lr 0.3 × batch/256, weight decay 1e-4, η 0.02 with the clipped trust
  ratio, biases and norms excluded, momentum 0.9, batch 256, 10 warm-up epochs then cosine
  (solo-learn; solo warms up from 3e-5, fastssl from 0).
- Views: solo-learn's asymmetric.yaml — crop 32 px of scale (0.08, 1), flip 0.5, jitter
  (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2, no blur; solarisation 0 on the first view and
  0.2 on the second.
- 200 epochs, the project's CIFAR budget (Mini-SSL's); solo-learn trains 1000 (CIFAR-10
  92.10 %, CIFAR-100 70.90 % online linear).
- ResNet-18 with the CIFAR stem and split-BN in 8 groups: project-wide (Mini-SSL); solo-learn
  trains on one GPU with sync-BN, i.e. BN over the whole batch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import OptimConfig, TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.barlow_twins import BarlowTwins, BarlowTwinsConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewConfig, ViewRecipe, asymmetric_views  # noqa: E402

FIRST_VIEW = ViewConfig(crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.0)
LARS = OptimConfig(optimizer="lars", lr_per_256=0.3, weight_decay=1e-4, lars_eta=0.02, warmup_epochs=10)


@dataclass(frozen=True)
class Config(TrainConfig):
    views: ViewConfig = field(default_factory=lambda: FIRST_VIEW)
    second_views: ViewConfig = field(default_factory=lambda: replace(FIRST_VIEW, solarize_p=0.2))
    optim: OptimConfig = field(default_factory=lambda: LARS)
    method: BarlowTwinsConfig = field(default_factory=BarlowTwinsConfig)


PRESETS = dataset_presets(Config(data=tyro.MISSING))  # type: ignore[arg-type]


def build_method(cfg: Config, backbone) -> BarlowTwins:
    return BarlowTwins(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return asymmetric_views(cfg.views, cfg.second_views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
