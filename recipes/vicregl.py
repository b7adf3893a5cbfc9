"""VICRegL on the VICReg recipe (solo-learn's CIFAR settings).

    accelerate launch recipes/vicregl.py --data data/cifar10 [--method.alpha 0.95]

Sources of the defaults:

- α 0.75, the weight of the global criterion (the paper and the authors' main_vicregl.py).
  Seed 003 trains α ∈ {0.95, 0.75, 0.5, 0.25} with lightly on Imagenette, ImageWoof and
  NABirds: at most ~1.5 points apart, the larger α usually ahead (``--method.alpha``).
- Matched cells kept (7, 2) of CIFAR's 4×4 map: the authors' (20, 4) of a 7×7 map scaled
  to 16 cells, rounded up (fastssl-tuned). Presets: (20, 4) for imagenette-224 (7×7 map,
  the authors'), (15, 3) for stl10 (6×6) by the same scaling; the 4×4 maps of
  tiny-imagenet and imagenette-128 keep (7, 2). The authors use 20 in the first and 4 in
  the second matching direction whatever the views (lightly does likewise); the paper
  gives 20 for global and 4 for local views, i.e. (7, 7) here with two global views.
- Feature-based matching keeps the best matches too (the paper; lightly); the authors'
  code keeps every cell (``--method.all-feature-matches``).
- Local projector 512→512 (BN, ReLU)→512 (BN, ReLU)→512 on every cell of the last feature
  map (the authors' --maps-mlp 512-512-512).
- Everything else — weights 25/25/1, the 512→2048→2048→2048 expander, LARS lr 0.3 ×
  batch/256, weight decay 1e-4, η 0.02, biases and norms excluded, 10 warm-up epochs, the
  views (crop scale (0.2, 1), jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2, no blur,
  solarisation 0.1), 200 epochs — is recipes/vicreg.py's (solo-learn's CIFAR VICReg), so
  ``--method.alpha 1`` trains VICReg. lightly's Imagenette VICRegL also keeps VICReg's LARS
  0.3 / 1e-4; the authors' ImageNet runs use AdamW or LARS with weight decay 1e-6.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import OptimConfig, TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.vicregl import VICRegL, VICRegLConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewConfig, ViewRecipe, two_views  # noqa: E402

VIEW = ViewConfig(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.0, solarize_p=0.1)  # as recipes/vicreg.py
LARS = OptimConfig(optimizer="lars", lr_per_256=0.3, weight_decay=1e-4, lars_eta=0.02, warmup_epochs=10)


@dataclass(frozen=True)
class Config(TrainConfig):
    views: ViewConfig = field(default_factory=lambda: VIEW)
    optim: OptimConfig = field(default_factory=lambda: LARS)
    method: VICRegLConfig = field(default_factory=VICRegLConfig)


PRESETS = dataset_presets(Config(data=tyro.MISSING))  # type: ignore[arg-type]
# num_matches follows the size of the last feature map.
PRESETS["imagenette-224"] = replace(PRESETS["imagenette-224"], method=VICRegLConfig(num_matches=(20, 4)))
PRESETS["stl10"] = replace(PRESETS["stl10"], method=VICRegLConfig(num_matches=(15, 3)))


def build_method(cfg: Config, backbone) -> VICRegL:
    return VICRegL(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return two_views(cfg.views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
