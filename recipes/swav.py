"""SwAV (Caron et al., 2020) on CIFAR with solo-learn's recipe (scripts/pretrain/cifar/swav.yaml).

    accelerate launch recipes/swav.py --data data/cifar10 [--local-crops 6]

Sources of the defaults:
- Prototypes K 3000, τ 0.1, ε 0.05 with 3 Sinkhorn iterations, projector 512→2048 (BN,
  ReLU)→128, queue of 3840 projections per global view, prototypes frozen for 2 epochs:
  solo-learn's swav.yaml and swav.py (τ, ε, iterations and the 3840-long queue are also
  the paper's; the paper freezes the prototypes for 1 epoch). solo-learn starts the queue
  at epoch 50 of 1000; scaled to fastssl's 200-epoch budget, it starts at epoch 10.
- Optimiser: solo-learn's LARS lr 0.6×batch/256, wd 1e-6, η 0.02, biases and norms
  excluded, momentum 0.9; its default warm-up of 10 epochs, then cosine. Batch 256, 200
  epochs (fastssl's CIFAR budget; solo-learn trains 1000). ResNet-18 with the CIFAR stem
  and split-BN in 8 groups, as every fastssl recipe (solo-learn: BN over each view's 256).
- Views: solo-learn's CIFAR symmetric.yaml: 2 crops of scale 0.08–1, jitter
  0.8/0.8/0.8/0.2 with p 0.8, grayscale 0.2, blur p 0.5, flip 0.5, no solarisation.
- Multi-crop: solo-learn's CIFAR SwAV uses 2 crops and no local crops, so
  ``local_crops`` is 0. ``--local-crops 6`` gives the paper's 2+6 recipe at CIFAR scale:
  local crops of 16 px (the paper's 96/224, rounded to a size the ViT patch and the
  ResNet stride divide) and scale 0.05–0.14 (paper). The paper then also narrows the
  global crops to scale 0.14–1: ``--views.crop-scale 0.14 1``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import OptimConfig, TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.swav import SwAV, SwAVConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewConfig, ViewRecipe, multi_crop  # noqa: E402

replace = dataclasses.replace

# solo-learn's CIFAR symmetric.yaml (the SimCLR/SwAV views).
GLOBAL_VIEWS = ViewConfig(crop_scale=(0.08, 1.0), jitter=(0.8, 0.8, 0.8, 0.2))
LOCAL_VIEWS = replace(GLOBAL_VIEWS, size=16, crop_scale=(0.05, 0.14))


@dataclass(frozen=True)
class Config(TrainConfig):
    method: SwAVConfig = field(default_factory=SwAVConfig)
    local_views: ViewConfig = field(default_factory=lambda: LOCAL_VIEWS)
    local_crops: int = 0  # small views per image (solo-learn CIFAR: none; the paper: 6)


PRESETS = dataset_presets(
    Config(  # type: ignore[arg-type]
        data=tyro.MISSING,
        views=GLOBAL_VIEWS,
        optim=OptimConfig(optimizer="lars", lr_per_256=0.6, weight_decay=1e-6, warmup_epochs=10),
    )
)


def build_method(cfg: Config, backbone) -> SwAV:
    return SwAV(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return multi_crop(cfg.views, cfg.views, cfg.local_views, cfg.local_crops)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
