"""lightly's defaults, for the ``lightly`` convention of the seven methods of the seed-003 study
(SimCLR, SimSiam, SwAV, BYOL, Barlow Twins, VICReg, VICRegL): ``--convention lightly``.

The study (``../shared/seeds/003_*.txt``, 2023) trains a ResNet-18 at batch 256 for 200 epochs
"follow[ing] the optimization protocol described in the library lightly": lightly's Imagenette
benchmark, ``docs/source/getting_started/benchmarks/imagenette_benchmark.py``, one LightningModule
per method. Read at lightly-ai/lightly ``COMMIT`` (v1.4.5, 2023-05-09, "update imagenette
benchmarks"), with the loss modules ``lightly/loss/*.py`` and heads
``lightly/models/modules/heads.py`` at the same commit; the seven models' settings are the same
from d9289cd (2023-04-03) to 321a75d (2024-07-26). Each method's own values are beside its
``register``. Not taken from lightly: the views (the study varies them itself) and the data-set
geometry (stem, sizes: the data presets).

Not expressible by fastssl's options, for every method: lightly's schedules are stepped per
epoch (Lightning's default interval: ``CosineAnnealingLR(optim, max_epochs)``, and
``CosineWarmupScheduler``'s warm-up at (e + 1)/W of the peak in epoch e, lightly/utils/scheduler.py),
fastssl's per step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastssl.config import ModelConfig, OptimConfig

COMMIT = "3ea0736139af1db01152f44393c394daca6c973e"  # lightly-ai/lightly, v1.4.5

# imagenette_benchmark.py, SimCLRModel, BYOLModel, BarlowTwinsModel (SimSiamModel unscaled):
# torch.optim.SGD(self.parameters(), lr=6e-2 * lr_factor, momentum=0.9, weight_decay=5e-4), every
# parameter decayed, CosineAnnealingLR(optim, max_epochs), no warm-up.
SGD = {"optimizer": "sgd", "lr_per_256": 0.06, "lr_scaling": "linear", "momentum": 0.9, "weight_decay": 5e-4,
       "warmup_epochs": 0.0}

# imagenette_benchmark.py, VICRegModel and VICRegLModel ("Training diverges without LARS"):
# pl_bolts' LARS(lr=0.3 * lr_factor, weight_decay=1e-4, momentum=0.9) with its default
# trust_coefficient 0.001, every parameter (biases and norms too) adapted and decayed
# (Lightning-Universe/lightning-bolts pl_bolts/optimizers/lars.py at 2c8b022), then
# CosineWarmupScheduler(optim, warmup_epochs, max_epochs). Not expressible: pl_bolts' layer lr is
# lr·η·‖w‖/(‖g‖ + λ‖w‖), unclipped; fastssl's LARS takes min(lr, η·‖w‖/(‖g‖ + λ‖w‖)).
LARS = {"optimizer": "lars", "lr_per_256": 0.3, "lr_scaling": "linear", "momentum": 0.9, "weight_decay": 1e-4,
        "lars_eta": 0.001, "lars_exclude_bias_and_norm": False}

# imagenette_benchmark.py: torchvision.models.resnet18() (plain BN, no zero-initialised residual
# branches), called once per view as fastssl does by default.
MODEL = {"norm": "bn", "zero_init_residual": False, "joint_views": False}


def convention(our_method: Any, our_optim: OptimConfig, our_model: ModelConfig,
               **lightly: Mapping[str, Any]) -> dict[str, Any]:
    """The changes, in ``Preset.changes``' form, that make a recipe's settings lightly's: of
    lightly's values (``lightly``: "method", "optim" or "model" → field → value), those that
    differ from the recipe's own (``our_method``: its settings class's defaults; ``our_optim``,
    ``our_model``: what it registers), so that the convention holds only real differences."""
    ours = {"method": our_method, "optim": our_optim, "model": our_model}
    changes = {section: {name: value for name, value in values.items() if getattr(ours[section], name) != value}
               for section, values in lightly.items()}
    return {section: values for section, values in changes.items() if values}
