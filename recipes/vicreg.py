"""VICReg with solo-learn's CIFAR recipe (vturrisi/solo-learn, scripts/pretrain/cifar/vicreg.yaml).

    accelerate launch recipes/vicreg.py --data data/cifar10 [--preset cifar100]

Sources of the defaults:

- Loss: invariance, variance and covariance weights 25, 25, 1, γ 1, ε 1e-4 (the paper,
  the authors' code, solo-learn). The variance terms of the two views are summed, as the
  paper's Eq. 6 and solo-learn do (the authors' main_vicreg.py averages them).
- Expander 512→2048 (BN, ReLU)→2048 (BN, ReLU)→2048 (solo-learn CIFAR; the paper's ImageNet
  expander is 8192-8192-8192).
- Optimiser: LARS, lr 0.3 × batch/256, weight decay 1e-4, η 0.02 with the clipped trust
  ratio, biases and norms excluded, momentum 0.9, batch 256, 10 warm-up epochs then cosine
  (solo-learn; solo warms up from 3e-5, fastssl from 0).
- Views: solo-learn's inline VICReg augmentation, the same for both views — crop 32 px of
  scale (0.2, 1), flip 0.5, jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2, no blur,
  solarisation 0.1.
- 200 epochs, the project's CIFAR budget (Mini-SSL's); solo-learn trains 1000 (CIFAR-10
  92.07 %, CIFAR-100 68.54 % online linear).
- ResNet-18 with the CIFAR stem and split-BN in 8 groups: project-wide (Mini-SSL); solo-learn
  trains on one GPU with sync-BN, i.e. BN over the whole batch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import OptimConfig, TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.vicreg import VICReg, VICRegConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewConfig, ViewRecipe, two_views  # noqa: E402

VIEW = ViewConfig(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.0, solarize_p=0.1)
LARS = OptimConfig(optimizer="lars", lr_per_256=0.3, weight_decay=1e-4, lars_eta=0.02, warmup_epochs=10)


@dataclass(frozen=True)
class Config(TrainConfig):
    views: ViewConfig = field(default_factory=lambda: VIEW)
    optim: OptimConfig = field(default_factory=lambda: LARS)
    method: VICRegConfig = field(default_factory=VICRegConfig)


PRESETS = dataset_presets(Config(data=tyro.MISSING))  # type: ignore[arg-type]


def build_method(cfg: Config, backbone) -> VICReg:
    return VICReg(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return two_views(cfg.views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
