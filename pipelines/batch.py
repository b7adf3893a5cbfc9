"""The contract between every loader and every method."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class ViewMeta:
    """Where each view of one resolution group came from (view-major, like the images)."""

    boxes: Tensor  # (V·N)×4 int64: top, left, height, width of the crop in source pixels
    flipped: Tensor  # (V·N) bool: horizontally flipped after cropping


@dataclass
class ViewBatch:
    """What a loader yields, already on the training device.

    ``views`` groups the augmented views by resolution, e.g. ``{"global": (2·N)×3×H×W}``,
    stacked view-major (all first views, then all second views), float, normalised and
    channels-last, so a method makes one backbone call per resolution. ``indices`` are the
    dataset indices of the N source images, ``labels`` their labels (monitoring only; None
    for unlabelled data), ``meta`` the crop boxes and flips per group.
    """

    views: dict[str, Tensor]
    indices: Tensor
    labels: Tensor | None
    meta: dict[str, ViewMeta]

    @property
    def batch_size(self) -> int:
        return self.indices.shape[0]

    def num_views(self, group: str) -> int:
        return self.views[group].shape[0] // self.batch_size
