"""Settings that several recipes share, each cited once here; a recipe names the one it
takes. The plain defaults of ``TrainConfig`` (``fastssl/config.py``, ``pipelines/spec.py``)
are Mini-SSL's CIFAR recipe: CIFAR ResNet-18 with split-BN in 8 groups, batch 256, SGD
0.06 × batch/256 with momentum 0.9 and weight decay 5e-4, 5 warm-up epochs then cosine,
200 epochs, and the MoCo v2 views of its data_public.py."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

from fastssl.config import (
    C,
    LocalCropsTrainConfig,
    ModelConfig,
    MultiCropTrainConfig,
    OptimConfig,
    SecondViewTrainConfig,
    SingleViewTrainConfig,
    TrainConfig,
    WeakViewTrainConfig,
    with_views,
)
from fastssl.recipes import Preset, Views, preset
from pipelines.spec import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    STL10_MEAN,
    STL10_STD,
    TINY_IMAGENET_MEAN,
    TINY_IMAGENET_STD,
    ViewConfig,
)

# Two views of Mini-SSL's strong augmentation (data_public.py: the MoCo v2 paper's at 32 px).
MINI_SSL_VIEWS = Views(TrainConfig, {})
# The same two views held as a first and a second one, so that a preset can make them differ.
MINI_SSL_PAIR = Views(SecondViewTrainConfig, {})
# One Mini-SSL view of each image, for a student and its frozen teacher alike (distillation).
ONE_VIEW = Views(SingleViewTrainConfig, {})


def one_crop_and_flip(scale: tuple[float, float]) -> Views:
    """One view of each image, a crop of ``scale`` and a flip, no colour (CompRess's and
    SimReg's weak view, for the student and the teacher alike)."""
    return Views(SingleViewTrainConfig, {"views": ViewConfig(crop_scale=scale, jitter_p=0.0, grayscale_p=0.0,
                                                             blur_p=0.0)})
# Mini-SSL's strong view for the student and its weak one for the teacher (get_weak_augment:
# crop and a flip with p 0.9, no colour): its ``--weak`` runs of MSF, ReSSL and SCE.
MINI_SSL_STRONG_WEAK = Views(WeakViewTrainConfig, {})
# BYOL's asymmetric pair (Grill et al., 2020, Appendix B, Table 6: view 2 blurred with p 0.1
# and solarised with p 0.2) on Mini-SSL's 32 px ops; view 1 keeps Mini-SSL's blur p 0.5
# rather than the paper's 1.
BYOL_PAPER_PAIR = Views(SecondViewTrainConfig, {"second_views": ViewConfig(blur_p=0.1, solarize_p=0.2)})
# solo-learn's CIFAR asymmetric.yaml: crops of scale 0.08–1, jitter 0.4/0.4/0.2/0.1 with
# p 0.8, grayscale 0.2, flip 0.5, no blur; the second view solarised with p 0.2.
_SOLO_FIRST = ViewConfig(crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.0)
SOLO_ASYMMETRIC_PAIR = (_SOLO_FIRST, replace(_SOLO_FIRST, solarize_p=0.2))
SOLO_ASYMMETRIC = Views(SecondViewTrainConfig, dict(zip(("views", "second_views"), SOLO_ASYMMETRIC_PAIR, strict=True)))
# solo-learn's CIFAR symmetric.yaml (its SimCLR and SwAV views): crops of scale 0.08–1,
# jitter 0.8/0.8/0.8/0.2 with p 0.8, grayscale 0.2, blur p 0.5, flip 0.5.
SOLO_SYMMETRIC_VIEW = ViewConfig(crop_scale=(0.08, 1.0), jitter=(0.8, 0.8, 0.8, 0.2))
# solo-learn's inline VICReg augmentation, the same for both views: crop scale 0.2–1,
# jitter 0.4/0.4/0.2/0.1 with p 0.8, grayscale 0.2, no blur, solarisation 0.1.
SOLO_VICREG_VIEWS = Views(TrainConfig, {"views": ViewConfig(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.0, solarize_p=0.1)})
# solo-learn's LARS (its CIFAR barlow.yaml and vicreg.yaml): lr 0.3 × batch/256, weight
# decay 1e-4, η 0.02 with the clipped trust ratio, biases and norms excluded, momentum 0.9,
# 10 warm-up epochs from its ``warmup_start_lr`` 3e-5, then cosine.
SOLO_LARS = OptimConfig(optimizer="lars", lr_per_256=0.3, weight_decay=1e-4, lars_eta=0.02, warmup_epochs=10,
                        warmup_start_lr=3e-5)
# solo-learn's CIFAR ResNet-18 (3×3 stem, no max-pool) trains on one GPU with plain BN, each
# view through the network on its own: BN over each view's batch (several processes: synced).
SOLO_MODEL = ModelConfig(norm="bn")


def multi_crop(first: ViewConfig, second: ViewConfig | None = None) -> Views:
    """Two global views (``second`` None: both ``first``) and local crops at the paper's
    SwAV/DINO ratio scaled to CIFAR: 16 px (96/224 rounded to a size the ViT patch and the
    ResNet stride divide) of scale 0.05–0.14; none by default, as solo-learn's CIFAR configs."""
    local = replace(first, size=16, crop_scale=(0.05, 0.14))
    if second is None:
        return Views(LocalCropsTrainConfig, {"views": first, "local_views": local})
    return Views(MultiCropTrainConfig, {"views": first, "second_views": second, "local_views": local})


def mini_ssl_tiny_imagenet(method_config: type) -> dict[str, Preset]:
    """Mini-SSL's Tiny-ImageNet script: EMA momentum 0.996 and memories (queue, support set,
    relation bank) of 16,384, for whichever of ``momentum``, ``queue_size`` and
    ``memory_size`` the method has; for the 64 px set and its 32 px copy."""
    values = {"momentum": 0.996, "queue_size": 16384, "memory_size": 16384}
    fields = {f.name for f in dataclasses.fields(method_config)}
    method = {name: value for name, value in values.items() if name in fields}
    return {name: preset(name, method=method) for name in ("tiny-imagenet", "tiny-imagenet-32")}


DATA_SETS = ("cifar10", "cifar100", "tiny-imagenet", "tiny-imagenet-32", "stl10", "imagenette-128", "imagenette-224",
             "imagenette-v2-160", "imagewoof-224", "nabirds-224")



def dataset_presets(cifar10: C) -> dict[str, C]:
    """A recipe's presets per data set, from its CIFAR-10 configuration: the normalisation
    statistics, view size and stem Mini-SSL uses for each (data_public.py, resnet.py), named
    as ``DATA_SETS``."""
    model = cifar10.model

    def imagenet_like(size: int) -> C:  # ImageNet stem and statistics (fastssl-tuned for Imagenette)
        views = with_views(cifar10, size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        return replace(views, model=replace(model, cifar_stem=False, maxpool=True, patch_size=16))

    def study_like() -> C:
        """The seed-003 study's geometry: ResNet-18 with the ImageNet stem, 224 px views, batch
        256, 200 epochs (its optimiser is each recipe's ``lightly`` convention, its views the
        study's transformations, pipelines/transformations.py)."""
        cfg = imagenet_like(224)
        return replace(cfg, optim=replace(cfg.optim, batch_size=256, epochs=200))

    return {
        "cifar10": cifar10,
        "cifar100": with_views(cifar10, mean=CIFAR100_MEAN, std=CIFAR100_STD),
        # Mini-SSL: 64 px, 3×3 stem with the max-pool kept.
        "tiny-imagenet": replace(
            with_views(cifar10, size=64, mean=TINY_IMAGENET_MEAN, std=TINY_IMAGENET_STD),
            model=replace(model, maxpool=True, patch_size=8),
        ),
        # The 32 px copy in ../shared/data: CIFAR geometry, Tiny-ImageNet statistics (fastssl-tuned).
        "tiny-imagenet-32": with_views(cifar10, mean=TINY_IMAGENET_MEAN, std=TINY_IMAGENET_STD),
        # Mini-SSL's STL-10 (data_public.py): views cropped at 64 px from the 96 px images,
        # STL-10 statistics, the 3×3 stem with the max-pool kept, tested on the whole 96 px
        # image; trained on the labelled and the 100,000 unlabelled images.
        "stl10": replace(
            with_views(cifar10, size=64, mean=STL10_MEAN, std=STL10_STD),
            model=replace(model, maxpool=True, patch_size=8),
            train_splits=("train", "unlabeled"), eval_size=96,
        ),
        "imagenette-128": imagenet_like(128),
        "imagenette-224": imagenet_like(224),
        # The study's data sets (seed 003), each at its 224 px views. ImageNette v2-160 is stored
        # at its shorter side of 160 px (convert it without --size): the study upsamples it.
        "imagenette-v2-160": replace(study_like(), upsampled_views="the study's 224 px views of ImageNette v2-160"),
        "imagewoof-224": study_like(),
        "nabirds-224": study_like(),
    }
