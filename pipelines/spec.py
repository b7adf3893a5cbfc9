"""What a view is, as data: the settings of one augmented view and the normalisation
statistics of the data sets the recipes train on. A leaf module (no torch): the
configuration, the view ops and the fused kernel all read it, and it reads none of them."""

from __future__ import annotations

from dataclasses import dataclass

# Per-channel mean and standard deviation of [0, 1] pixels (the values the Mini-SSL code
# and torchvision use).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
TINY_IMAGENET_MEAN, TINY_IMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
STL10_MEAN, STL10_STD = (0.4408, 0.4279, 0.3867), (0.2682, 0.2610, 0.2686)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViewConfig:
    """One view's augmentation, in the order applied (the MoCo v2 / SimCLR CIFAR recipe of
    Mini-SSL's data_public.py)."""

    size: int = 32  # output side in pixels
    crop_scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop: fraction of the source area
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop: width / height
    flip_p: float = 0.5  # probability of a horizontal flip
    vflip_p: float = 0.0  # probability of a vertical flip
    rotate_p: float = 0.0  # probability of a 90° counter-clockwise rotation (lightly's RandomRotate)
    local_rotation_p: float = 0.0  # probability of LoRot-I: one quadrant rotated by 90°, 180° or 270°
    region_confusion_p: float = 0.0  # probability of DCL's region confusion
    region_grid: int = 7  # region confusion: regions per row and per column
    region_neighbourhood: float = 2.0  # region confusion: how far (in regions) the sort keys are jittered
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    """ColorJitter brightness, contrast, saturation, hue."""
    jitter_p: float = 0.8  # probability of the colour jitter
    grayscale_p: float = 0.2  # probability of grayscale
    blur_p: float = 0.5  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # range of the blur's σ, pixels
    blur_kernel: int = 13  # taps of the blur: 2·⌈3σ_max⌉+1 approximates the untruncated PIL blur Mini-SSL uses
    solarize_p: float = 0.0  # probability of solarisation
    solarize_threshold: float = 0.5  # solarisation inverts intensities above this, on [0, 1]
    mean: tuple[float, float, float] = CIFAR10_MEAN  # normalisation: per-channel mean of [0, 1] pixels
    std: tuple[float, float, float] = CIFAR10_STD  # normalisation: per-channel standard deviation


# Settings applied to a whole resolution group at once: its views must agree on them (the
# region grid sets the width of the region confusion's parameters).
GROUP_SETTINGS = ("size", "blur_kernel", "solarize_threshold", "region_grid", "mean", "std")


def weak_view() -> ViewConfig:
    """Mini-SSL's weak teacher view (``get_weak_augment``): crop (0.2–1) and a flip with
    p 0.9 (sic), no colour — for ReSSL, MSF and SCE."""
    return ViewConfig(flip_p=0.9, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
