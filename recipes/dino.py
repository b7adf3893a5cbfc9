"""DINO (Caron et al., 2021) on CIFAR with solo-learn's recipe (scripts/pretrain/cifar/dino.yaml),
or with a ViT and the paper's AdamW.

    accelerate launch recipes/dino.py --data data/cifar10 [--local-crops 6]
    accelerate launch recipes/dino.py --data data/cifar10 --preset cifar10-vit

Sources of the defaults:
- Head 512→2048→2048→256 (GELU, no BN) then a weight-normalised 256→4096 layer; τ_s 0.1;
  τ_t 0.04 rising linearly to 0.07; centre momentum 0.9; last layer frozen for 1 epoch:
  solo-learn's dino.yaml and dino.py (the paper's values but K, which is 65536 on
  ImageNet). solo-learn warms τ_t up over 50 of its 1000 epochs; scaled to fastssl's
  200-epoch budget, over 10.
- Teacher momentum 0.9995 rising to 1 along a cosine: solo-learn's dino.yaml, and the
  official main_dino.py's advice for batch 256 (its default 0.996 is for batch 1024).
- Optimiser (ResNet-18): solo-learn's LARS lr 0.3×batch/256, wd 1e-6, η 0.02, biases and
  norms excluded, momentum 0.9; its default warm-up of 10 epochs, then cosine. Batch 256,
  200 epochs (fastssl's CIFAR budget; solo-learn trains 1000). ResNet-18 with the CIFAR
  stem and split-BN in 8 groups, as every fastssl recipe.
- Views: solo-learn's CIFAR asymmetric.yaml: crops of scale 0.08–1, jitter
  0.4/0.4/0.2/0.1 with p 0.8, grayscale 0.2, flip 0.5, no blur; the second view solarised
  with p 0.2. (The paper blurs view 1 always and view 2 with p 0.1, at 224 px.)
- Multi-crop: solo-learn's CIFAR DINO uses 2 crops and no local crops, so ``local_crops``
  is 0. ``--local-crops 6`` gives the paper's multi-crop at CIFAR scale: 16 px local
  crops (the paper's 96/224, rounded so that the ViT patch and the ResNet stride divide
  it) of scale 0.05–0.14, the official ResNet-50 setting, whose global crops are then
  0.14–1: ``--views.crop-scale 0.14 1 --second-views.crop-scale 0.14 1``.
- ViT presets (``cifar10-vit``, ``cifar100-vit``): ViT-Tiny with 4 px patches
  (8×8 tokens at 32 px), AdamW lr 5e-4×batch/256, β (0.9, 0.999), wd 0.04 on weights only,
  10 warm-up epochs (the paper's ViT recipe, whose wd rises to 0.4 along a cosine: fastssl
  keeps it constant), local crops of scale 0.05–0.4 (the official ViT default, global
  0.4–1). Any preset takes ``--model.arch vit_tiny --model.patch-size 4`` too, then with LARS.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import OptimConfig, TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.dino import DINO, DINOConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewConfig, ViewRecipe, multi_crop  # noqa: E402

replace = dataclasses.replace

# solo-learn's CIFAR asymmetric.yaml (BYOL, Barlow Twins, DINO, MoCo v3, NNCLR).
FIRST_VIEWS = ViewConfig(crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.0)
SECOND_VIEWS = replace(FIRST_VIEWS, solarize_p=0.2)
LOCAL_VIEWS = replace(FIRST_VIEWS, size=16, crop_scale=(0.05, 0.14))


@dataclass(frozen=True)
class Config(TrainConfig):
    method: DINOConfig = field(default_factory=DINOConfig)
    second_views: ViewConfig = field(default_factory=lambda: SECOND_VIEWS)  # ``views`` is the first
    local_views: ViewConfig = field(default_factory=lambda: LOCAL_VIEWS)
    local_crops: int = 0  # small views per image (solo-learn CIFAR: none; the paper: 6–10)


PRESETS = dataset_presets(
    Config(  # type: ignore[arg-type]
        data=tyro.MISSING,
        views=FIRST_VIEWS,
        optim=OptimConfig(optimizer="lars", lr_per_256=0.3, weight_decay=1e-6, warmup_epochs=10),
    )
)
for name in ("cifar10", "cifar100"):
    cifar = PRESETS[name]
    PRESETS[f"{name}-vit"] = replace(
        cifar,
        model=replace(cifar.model, arch="vit_tiny", patch_size=4),
        optim=OptimConfig(optimizer="adamw", lr_per_256=5e-4, weight_decay=0.04, warmup_epochs=10),
        local_views=replace(cifar.local_views, crop_scale=(0.05, 0.4)),
    )


def build_method(cfg: Config, backbone) -> DINO:
    return DINO(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return multi_crop(cfg.views, cfg.second_views, cfg.local_views, cfg.local_crops)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
