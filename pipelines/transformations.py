"""The five view transformations of the seed-003 study, as changes to a ``ViewConfig``.

The study (a 2023 benchmark built on lightly) trains every method with each of five
augmentation sets; it used LoRot-I and DCL as augmentations only, without their papers'
auxiliary losses, and so does fastssl. Each transformation here is every setting it takes,
so the same name gives the same views whatever the recipe's own views are. They apply to a
recipe's global views; VICRegL's local views keep the VICRegL paper's settings, as the study
says it did.

* ``baseline``: lightly's default augmentation, ``ImageCollateFunction`` (lightly-ai/lightly,
  lightly/data/collate.py at 03ffc18): RandomResizedCrop of scale 0.15–1, a +90° rotation
  with ``rr_prob`` 0 (the study lists "rotating", but lightly's probability defaults to 0:
  off, as the default it says it used), horizontal flip 0.5, vertical flip 0, colour jitter
  0.7/0.7/0.7/0.2 with p 0.8, grayscale 0.2, Gaussian blur p 0.5 with σ uniform in 0.2–2 px
  (lightly's ``GaussianBlur`` since its ``sigmas`` argument, lightly/transforms/gaussian_blur.py
  at 0ce7315, which ignores the older ``kernel_size``). No solarisation.
* ``simclr``: SimCLR's augmentation (Chen et al., 2020, Appendix A; lightly's
  ``SimCLRTransform``, lightly/transforms/simclr_transform.py at 013dec2): crop scale 0.08–1,
  jitter 0.8/0.8/0.8/0.2 with p 0.8, grayscale 0.2, blur p 0.5 with σ 0.1–2, flip 0.5.
* ``orthogonality``: the baseline with random horizontal *and* vertical flips (p 0.5 each).
* ``lorot``: the baseline and LoRot-I (Moon et al., 2022) on every view: one random quadrant
  rotated by 90°, 180° or 270° (``pipelines.geometry.LocalRotation``).
* ``dcl``: the baseline and DCL's region confusion (Chen et al., 2019; Maaz et al., 2021) on
  every view: a 7×7 grid of regions shuffled within a neighbourhood of 2
  (``pipelines.geometry.RegionConfusion``). Not lightly's ``DCLLoss``, which is Decoupled
  Contrastive Learning (Yeh et al., 2022): the names clash.

The seed's minutes for its LoRot-I and DCL columns are about half its baseline's, which
suggests its runs of them may have left some of the baseline's (PIL, CPU-side) colour and
blur ops out; it does not say so, so here they add to the baseline. A grid can drop any op
per transformation with an override (``tools/study.py``).
"""

from __future__ import annotations

from typing import Any

# Every setting a transformation fixes (the ops' order and the view size are the pipeline's
# and the data preset's).
_LIGHTLY_DEFAULT: dict[str, Any] = {
    "crop_scale": (0.15, 1.0), "crop_ratio": (3 / 4, 4 / 3), "rotate_p": 0.0, "flip_p": 0.5, "vflip_p": 0.0,
    "jitter": (0.7, 0.7, 0.7, 0.2), "jitter_p": 0.8, "grayscale_p": 0.2, "blur_p": 0.5, "blur_sigma": (0.2, 2.0),
    "solarize_p": 0.0, "local_rotation_p": 0.0, "region_confusion_p": 0.0,
}

TRANSFORMATIONS: dict[str, dict[str, Any]] = {
    "baseline": _LIGHTLY_DEFAULT,
    "simclr": {**_LIGHTLY_DEFAULT, "crop_scale": (0.08, 1.0), "jitter": (0.8, 0.8, 0.8, 0.2), "blur_sigma": (0.1, 2.0)},
    "orthogonality": {**_LIGHTLY_DEFAULT, "vflip_p": 0.5},
    "lorot": {**_LIGHTLY_DEFAULT, "local_rotation_p": 1.0},
    "dcl": {**_LIGHTLY_DEFAULT, "region_confusion_p": 1.0, "region_grid": 7, "region_neighbourhood": 2.0},
}

# The views a transformation changes: every view field of a recipe but its local crops.
LOCAL_VIEW_FIELDS = ("local_views",)


def transformation(name: str) -> dict[str, Any]:
    """The ``ViewConfig`` settings of transformation ``name``."""
    if name not in TRANSFORMATIONS:
        raise ValueError(f"no view transformation '{name}' (transformations: {', '.join(TRANSFORMATIONS)})")
    return TRANSFORMATIONS[name]
