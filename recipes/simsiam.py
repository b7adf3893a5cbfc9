"""SimSiam (Chen & He, 2021) with the paper's CIFAR-10 recipe (Appendix D).

    accelerate launch recipes/simsiam.py --data data/cifar10 [--optim.batch-size 512]

Sources of the defaults:
- SGD, base lr 0.03 scaled by batch/256, momentum 0.9, weight decay 5e-4 on every
  parameter, cosine decay without warm-up (the paper warms up only batches ≥ 1024,
  §4.3); the predictor's lr stays at the peak (Table 1c): the paper, Appendix D and §4.2.
- Views: the paper's CIFAR views — its ImageNet (MoCo v2) augmentation at 32 px without
  blur ("We do not use blur augmentation"): crop scale 0.2–1, jitter 0.4/0.4/0.4/0.1 with
  p 0.8, grayscale 0.2, flip 0.5, as Mini-SSL's strong views less their blur.
- CIFAR ResNet-18 and "a 2-layer projection MLP. The outputs are 2048-d": Appendix D;
  predictor 2048→512→2048: §3.
- Project-wide, not the paper's: batch 256 (the paper: 512, ``--optim.batch-size 512``
  keeps its lr per image), 200 epochs (the paper: 800), split-BN in 8 groups (Mini-SSL).
Sources disagree: solo-learn's CIFAR config uses SGD lr 0.5×batch/256, wd 1e-5, a 3-layer
projector, blurred views (p 0.5) with crop scale 0.08–1 and 1000 epochs; lightly's CIFAR
benchmark SGD 0.06 unscaled with wd 5e-4. The paper comes first.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import OptimConfig, TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.simsiam import SimSiam, SimSiamConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewConfig, ViewRecipe, two_views  # noqa: E402


@dataclass(frozen=True)
class Config(TrainConfig):
    method: SimSiamConfig = field(default_factory=SimSiamConfig)


PRESETS = dataset_presets(Config(  # type: ignore[arg-type]
    data=tyro.MISSING,
    views=ViewConfig(blur_p=0.0),
    optim=OptimConfig(lr_per_256=0.03, weight_decay=5e-4, warmup_epochs=0),
))


def build_method(cfg: Config, backbone) -> SimSiam:
    return SimSiam(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return two_views(cfg.views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
