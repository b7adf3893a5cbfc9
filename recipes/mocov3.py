"""MoCo v3 (Chen, Xie & He, 2021) on CIFAR: ResNet-18 with solo-learn's CIFAR recipe, and
the paper's ViT recipe as ``--preset <data set>-vit``.

    accelerate launch recipes/mocov3.py --data data/cifar10
    accelerate launch recipes/mocov3.py --data data/cifar10 --preset cifar10-vit

Sources of the ResNet defaults:
- Heads as the authors' code (MoCo_ResNet): projector 512→4096 (BN, ReLU)→256 (BN without
  affine), predictor 256→4096 (BN, ReLU)→256, no biases; the same sizes in solo-learn's
  CIFAR mocov3.yaml.
- τ 0.2 and momentum 0.99 rising to 1 along a half cosine: solo-learn's CIFAR config (the
  paper: m 0.99 with ``--moco-m-cos``; τ 1.0 for its ResNet-50, 0.2 for its ViTs).
- LARS lr 0.3×batch/256, wd 1e-6, trust coefficient 0.02, biases and norms excluded from
  adaptation and decay, 10 warm-up epochs then cosine: solo-learn's CIFAR config and its
  default warm-up (the paper's ResNet-50: LARS 0.3–0.6, wd 1e-6, 10 warm-up epochs).
- Loss 2τ·InfoNCE summed over both directions: the paper's Algorithm 1.
- Views: the paper's (its code "follow[s] BYOL's augmentation recipe"): the same
  asymmetric pair as recipes/byol.py — Mini-SSL's 32 px ops, view 1 blurred with p 0.5,
  view 2 blurred with p 0.1 and solarised with p 0.2 — crop scale 0.2–1 as the paper's
  ResNet runs (``--crop-min=.2``). Sources disagree: the paper's jitter has saturation
  0.2; solo-learn's CIFAR asymmetric.yaml blurs neither view and crops 0.08–1.
- Project-wide: CIFAR ResNet-18, split-BN 8 groups, batch 256, 200 epochs (solo-learn: 1000).
ViT presets (the paper's CONFIG.md for ViT-S, scaled to ViT-Tiny; patch 4 at 32 px):
AdamW lr 1.5e-4×batch/256, wd 0.1, 40 warm-up epochs; crop scale 0.08–1 (its ViT runs keep
the default ``--crop-min``); a 3-layer projector and a predictor ending in BN (MoCo_ViT).
Not reproduced: the paper's frozen random patch projection (``--stop-grad-conv1``).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import OptimConfig, TrainConfig, dataset_presets, with_views  # noqa: E402
from fastssl.methods.mocov3 import MoCoV3, MoCoV3Config  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewConfig, ViewRecipe, asymmetric_views  # noqa: E402

replace = dataclasses.replace


@dataclass(frozen=True)
class Config(TrainConfig):
    method: MoCoV3Config = field(default_factory=MoCoV3Config)
    # ``views`` is BYOL's first view; the second is rarely blurred and sometimes solarised.
    second_views: ViewConfig = field(default_factory=lambda: ViewConfig(blur_p=0.1, solarize_p=0.2))


def with_vit(cfg: Config) -> Config:
    """The paper's ViT recipe on ``cfg``'s data set, with ViT-Tiny."""
    return replace(
        with_views(cfg, crop_scale=(0.08, 1.0)),
        model=replace(cfg.model, arch="vit_tiny"),
        optim=replace(cfg.optim, optimizer="adamw", lr_per_256=1.5e-4, weight_decay=0.1, warmup_epochs=40),
        method=replace(cfg.method, proj_layers=3, pred_last_bn=True),
    )


PRESETS = dataset_presets(Config(  # type: ignore[arg-type]
    data=tyro.MISSING,
    optim=OptimConfig(optimizer="lars", lr_per_256=0.3, weight_decay=1e-6, warmup_epochs=10),
))
PRESETS.update({f"{name}-vit": with_vit(cfg) for name, cfg in list(PRESETS.items())})


def build_method(cfg: Config, backbone) -> MoCoV3:
    return MoCoV3(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return asymmetric_views(cfg.views, cfg.second_views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
