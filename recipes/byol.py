"""BYOL (Grill et al., 2020) on CIFAR, with Mini-SSL's training recipe.

    accelerate launch recipes/byol.py --data data/cifar10 [--method.momentum-final 0.99]

Sources of the defaults:
- ResNet-18 with the CIFAR stem, split-BN (8 groups), batch 256, SGD 0.06×batch/256
  momentum 0.9 wd 5e-4 on every parameter, 5 warm-up epochs then cosine, 200 epochs:
  Mini-SSL's main_pretrain_evaluation.sh (its BYOL run). solo-learn trains 1000 epochs
  with LARS 1.0, wd 1e-5.
- Projector 512→2048→128 and predictor 128→2048→128 (BN, ReLU on the hidden layer):
  Mini-SSL's BYOL.py (the paper and solo-learn: 4096 hidden, 256 out).
- Loss: the mean of the two directions (Mini-SSL); the paper and solo-learn sum them.
- Target momentum τ: 0.99 rising to 1 along a half cosine, per step — the paper's schedule
  (§3.3; its ImageNet τ_base is 0.996) with solo-learn's CIFAR τ_base. Mini-SSL keeps 0.99
  constant: ``--method.momentum-final 0.99``.
- Views: the paper's asymmetric pair (Appendix B, Table 6: view 1 always blurred, never
  solarised; view 2 blurred with p 0.1, solarised with p 0.2), on Mini-SSL's 32 px ops
  (crop scale 0.2–1, jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale 0.2, blur σ 0.1–2). At
  32 px view 1 is blurred with p 0.5, not 1: Mini-SSL's CIFAR version of the pair
  (data_public.py get_aug1_snclr / get_aug2_snclr). Sources disagree: the paper's jitter
  has saturation 0.2 and its crop scale is 0.08–1; solo-learn's CIFAR asymmetric.yaml
  blurs neither view (``--views.blur-p 0 --second-views.blur-p 0``); Mini-SSL's own BYOL
  run uses its symmetric views (``--second-views.blur-p 0.5 --second-views.solarize-p 0``);
  the paper's p 1 is ``--views.blur-p 1``.
- Tiny-ImageNet: τ_base 0.996 (Mini-SSL's script; add ``--method.momentum-final 0.996``
  for its constant momentum), max-pool kept, 64 px views.
Not reproduced: Mini-SSL shuffles the target's batch across BN groups (shuffle-BN); the
paper does not, and without negatives BN cannot leak a shortcut to a contrastive target.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.byol import BYOL, BYOLConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewConfig, ViewRecipe, asymmetric_views  # noqa: E402

replace = dataclasses.replace


@dataclass(frozen=True)
class Config(TrainConfig):
    method: BYOLConfig = field(default_factory=BYOLConfig)
    # ``views`` is BYOL's first view; the second is rarely blurred and sometimes solarised.
    second_views: ViewConfig = field(default_factory=lambda: ViewConfig(blur_p=0.1, solarize_p=0.2))


PRESETS = dataset_presets(Config(data=tyro.MISSING))  # type: ignore[arg-type]
# Mini-SSL's Tiny-ImageNet script: momentum 0.996 (also for the 32 px copy).
for name in ("tiny-imagenet", "tiny-imagenet-32"):
    PRESETS[name] = replace(PRESETS[name], method=BYOLConfig(momentum=0.996))


def build_method(cfg: Config, backbone) -> BYOL:
    return BYOL(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return asymmetric_views(cfg.views, cfg.second_views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
