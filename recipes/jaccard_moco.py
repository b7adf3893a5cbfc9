"""MoCo with a Jaccard similarity (seed 004; Jiang et al., arXiv 2202.12921).

    accelerate launch recipes/jaccard_moco.py --data data/cifar10 [--preset cifar100]
    accelerate launch recipes/jaccard_moco.py --data data/tiny-imagenet --preset seed004

Seed 004 (the README of the first author's code, itself adapted from leftthomas/MoCo's)
contradicts itself: its options list batch 256 and 500 epochs, its command runs batch 128
for 50 epochs, and its τ 0.5 is leftthomas/MoCo's value for a plain cosine. The defaults
here keep the seed's method and optimiser and fastssl's CIFAR budget, so the recipe
compares with the others at equal cost:

- Method: momentum 0.999 (constant), 4096 negatives, 128-d heads: seed 004. Two heads
  d→512 (BN, ReLU)→128, loss 0.8·NCE(J) + 0.1·NCE(cos_p) + 0.1·NCE(cos_n), one direction,
  shuffled keys: the author's code (bjiang99/Ph.D.-s-Projects, SSL/SSL_MoCo_Jaccard
  @fe50c32, train_jaccard_tiny.py and model_jaccard.py).
- τ 0.1 (fastssl's choice among the sources): the author's result and checkpoint file
  names (τ 0.1, batch 512, 300 and 500 epochs) and his SimCLR-Jaccard script; his MoCo
  script defaults to 0.06. The seed's 0.5 would leave the logits J/τ within [0, 2], where a
  positive can hardly stand out from 4096 negatives; at 0.1 they span 10, as MoCo v2's
  cosines do at τ 0.2.
- Optimiser: Adam, lr 1e-3 with no batch scaling and no warm-up: seed 004 and the author's
  code. Weight decay 0 (AdamW with none is Adam): the code's coupled L2 of 1e-6 is
  negligible next to Adam-normalised gradients. The lr decays by cosine as in every fastssl
  recipe; the author's code keeps it constant (``--method.constant-lr``).
- ResNet-18 with the CIFAR stem, split-BN (8 groups), batch 256, 200 epochs, the kNN monitor:
  fastssl's CIFAR conventions (Mini-SSL's). The seed trains a ResNet-50 on Tiny-ImageNet.
- Views: Mini-SSL's MoCo v2 views without the blur (seed: "no Gaussian blur").

``--preset seed004`` is the seed as written: Tiny-ImageNet at 64 px, ResNet-50 with the 3×3
stem and no max-pool and plain BN (one GPU; the author's model_jaccard.py), crops of scale
(0.08, 1) (the author's utils3.py), batch 128 for 50 epochs (the seed's command; its option
defaults are ``--optim.batch-size 256 --optim.epochs 500``), τ 0.5, Adam at a constant 1e-3.
Its views keep Tiny-ImageNet's normalisation statistics (the author's code uses CIFAR-10's).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.config import OptimConfig, TrainConfig, dataset_presets  # noqa: E402
from fastssl.methods.jaccard_moco import JaccardMoCo, JaccardMoCoConfig  # noqa: E402
from fastssl.recipe import run_recipe  # noqa: E402
from pipelines.views import ViewConfig, ViewRecipe, two_views  # noqa: E402

replace = dataclasses.replace


def seed_optimiser() -> OptimConfig:
    """Adam at 1e-3 whatever the batch, no warm-up, no weight decay (seed 004)."""
    return OptimConfig(optimizer="adamw", lr_per_256=1e-3, lr_scaling="none", weight_decay=0.0, warmup_epochs=0.0)


@dataclass(frozen=True)
class Config(TrainConfig):
    method: JaccardMoCoConfig = field(default_factory=JaccardMoCoConfig)
    views: ViewConfig = field(default_factory=lambda: ViewConfig(blur_p=0.0))
    optim: OptimConfig = field(default_factory=seed_optimiser)


PRESETS = dataset_presets(Config(data=tyro.MISSING))  # type: ignore[arg-type]
_tiny = PRESETS["tiny-imagenet"]
PRESETS["seed004"] = replace(
    _tiny,
    views=replace(_tiny.views, crop_scale=(0.08, 1.0)),
    model=replace(_tiny.model, arch="resnet50", maxpool=False, norm="bn"),
    optim=replace(_tiny.optim, batch_size=128, epochs=50, schedule="constant"),
    method=replace(_tiny.method, temperature=0.5),
)


def build_method(cfg: Config, backbone) -> JaccardMoCo:
    return JaccardMoCo(cfg.method, backbone)


def build_views(cfg: Config) -> ViewRecipe:
    return two_views(cfg.views)


def main(args: list[str] | None = None) -> dict:
    return run_recipe(sys.modules[__name__], args)


if __name__ == "__main__":
    main()
