"""Batched geometric view ops with per-image random parameters: vertical flip, rotation by
90°, LoRot-I's local rotation and DCL's region confusion, for the seed-003 study (used as
augmentations only, without their papers' auxiliary losses).

The contract is ``pipelines.augment``'s: ``op.sample(n, generator)`` draws one set of
parameters per image on the CPU, ``op(images, params, inplace=...)`` applies them to the
whole float N×3×S×S batch (square views) on its device without a synchronisation. A
probability of 0 draws nothing from the generator, so the views of configs without these
ops are the ones they were before the ops existed.

LoRot-I and region confusion are per-image permutations of the pixels: a source index per
output pixel, built on the device from the small parameters with arithmetic on cached
tables, and one ``gather`` over the flattened pixels of the images that draw the op.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from pipelines.augment import _bernoulli, _subset, _to_device

# LoRot-I's quadrants, in the order of their index: the first half is the top or left one.
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


def _permute_pixels(images: Tensor, source: Tensor) -> Tensor:
    """Output pixel p of image i is pixel ``source[i, p]`` of image i (N×(H·W) flat indices)."""
    n, c = images.shape[:2]
    index = source[:, None, :].expand(n, c, -1)
    return images.reshape(n, c, -1).gather(2, index).view(images.shape)


class RandomVerticalFlip:
    """torchvision's ``RandomVerticalFlip``: the rows of the chosen images reversed."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return _bernoulli(n, self.p, generator) if self.p > 0 else torch.zeros(n, dtype=torch.bool)

    def __call__(self, images: Tensor, flip: Tensor, inplace: bool = False) -> Tensor:
        return _subset(images, flip, lambda chosen: chosen.flip(-2), inplace=inplace)


class RandomRotate90:
    """lightly's ``RandomRotate(prob, angle=90)``: the chosen images rotated by 90°
    counter-clockwise (``torch.rot90``)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return _bernoulli(n, self.p, generator) if self.p > 0 else torch.zeros(n, dtype=torch.bool)

    def __call__(self, images: Tensor, rotate: Tensor, inplace: bool = False) -> Tensor:
        return _subset(images, rotate, lambda chosen: torch.rot90(chosen, 1, (-2, -1)), inplace=inplace)


@functools.lru_cache(maxsize=16)
def _local_rotation_maps(size: int, device: torch.device) -> Tensor:
    """12×(size²) source indices: row 3·quadrant + k − 1 rotates that quadrant by k·90°.

    Rotating the image of its own pixel indices tells each output pixel where its value
    comes from. Quadrants have side size // 2; of an odd size the middle row and column
    belong to none."""
    side, far = size // 2, size - size // 2
    maps = []
    for top, left in ((0, 0), (0, far), (far, 0), (far, far)):
        for k in (1, 2, 3):
            pixels = torch.arange(size * size).view(size, size)
            block = pixels[top : top + side, left : left + side]
            block.copy_(torch.rot90(block.clone(), k, (0, 1)))
            maps.append(pixels.flatten())
    return _to_device(torch.stack(maps), device)


class LocalRotation:
    """LoRot-I (Moon et al., ECCV 2022, "Tailoring Self-Supervision for Supervised
    Learning"): with probability p, one of the image's four quadrants, chosen uniformly,
    rotated by k·90° with k uniform in {1, 2, 3}.

    Our choices where the paper leaves them open: the region is a quadrant (side
    size // 2; the middle row and column of an odd size never move), the rotation is
    counter-clockwise as ``torch.rot90``, and k = 0 is left out (the no-op that p already
    expresses). Parameters: N×2 int64, the quadrant (``QUADRANTS``' order) and k, with
    k = 0 where not applied.
    """

    def __init__(self, p: float = 1.0) -> None:
        self.p = p

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        if self.p == 0:
            return torch.zeros(n, 2, dtype=torch.int64)
        applied = _bernoulli(n, self.p, generator)
        quadrant = torch.randint(0, 4, (n,), generator=generator)
        k = torch.randint(1, 4, (n,), generator=generator) * applied
        return torch.stack([quadrant, k], 1)

    def __call__(self, images: Tensor, params: Tensor, inplace: bool = False) -> Tensor:
        quadrant, k = params.unbind(1)
        which = _to_device((3 * quadrant + k - 1).clamp(min=0), images.device)  # each image's map (any where k = 0)
        return _subset(images, k > 0, self._rotate, which, inplace=inplace)

    @staticmethod
    def _rotate(images: Tensor, which: Tensor) -> Tensor:
        return _permute_pixels(images, _local_rotation_maps(images.shape[-1], images.device)[which])


@functools.lru_cache(maxsize=16)
def _region_tables(size: int, grid: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """For region confusion at ``size`` px: each pixel's region (grid² for the pixels beyond
    the regions, right and bottom), each pixel's index minus its region's first pixel's
    (its own index beyond them), and each region's first pixel, with a 0 appended."""
    side = size // grid
    axis = torch.arange(size)
    region_of = torch.where(axis < grid * side, axis // side, grid)  # per row or column
    covered = (region_of[:, None] < grid) & (region_of[None, :] < grid)
    region = torch.where(covered, region_of[:, None] * grid + region_of[None, :], grid * grid).flatten()
    first = torch.arange(grid * grid)
    first = torch.cat([(first // grid) * side * size + (first % grid) * side, torch.zeros(1, dtype=torch.int64)])
    offset = torch.arange(size * size) - first[region]
    return _to_device(region, device), _to_device(offset, device), _to_device(first, device)


class RegionConfusion:
    """DCL's region confusion mechanism (Chen et al., CVPR 2019, "Destruction and
    Construction Learning for Fine-grained Image Recognition", Eq. 1; used as an
    augmentation by Maaz et al., 2021). Not lightly's ``DCLLoss``, which is Decoupled
    Contrastive Learning (Yeh et al., 2022): the names clash.

    With probability p the view is split into grid×grid regions of side s = size // grid
    (pixels beyond grid·s, right and bottom, stay in place). Within each row of regions,
    region i gets the key i + r, r ~ U(−k, k) (k = ``neighbourhood``), and the row's regions
    are reordered by sorting the keys (stably); then within each column the same with fresh
    keys. A region so moves less than 2k regions along each axis. Our choices: grid 7
    (DCL's N = 7 for its 448 px images; 32 px regions at 224 px) and neighbourhood 2.
    Parameters: N×grid² int64, the source region of each output region (row-major), the
    identity where not applied.
    """

    def __init__(self, p: float = 1.0, grid: int = 7, neighbourhood: float = 2.0) -> None:
        if grid < 1 or neighbourhood < 0:
            raise ValueError(f"region confusion needs a grid of at least 1 and a neighbourhood ≥ 0, "
                             f"got {grid} and {neighbourhood}")
        self.p, self.grid, self.neighbourhood = p, grid, neighbourhood

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        g = self.grid
        identity = torch.arange(g * g).expand(n, -1)
        if self.p == 0:
            return identity.clone()
        applied = _bernoulli(n, self.p, generator)
        position = torch.arange(g, dtype=torch.float32)
        row_keys = position + self.neighbourhood * (2 * torch.rand(n, g, g, generator=generator) - 1)  # [j, i]
        column_keys = position + self.neighbourhood * (2 * torch.rand(n, g, g, generator=generator) - 1)  # [i, j]
        in_row = torch.argsort(row_keys, dim=2, stable=True)  # [j, i]: the column of row j's i-th region
        in_column = torch.argsort(column_keys, dim=2, stable=True)  # [i, j]: the row of column i's j-th region
        source_row = in_column.transpose(1, 2)  # [j, i]
        source_column = in_row.gather(1, source_row)  # row-reordered region at (source_row, i)
        order = (source_row * g + source_column).reshape(n, g * g)
        return torch.where(applied[:, None], order, identity)

    def __call__(self, images: Tensor, order: Tensor, inplace: bool = False) -> Tensor:
        if images.shape[-1] < self.grid:
            raise ValueError(f"region confusion: {self.grid}×{self.grid} regions do not fit {images.shape[-1]} px")
        moved = (order != torch.arange(order.shape[1])).any(1)
        return _subset(images, moved, self._confuse, _to_device(order, images.device), inplace=inplace)

    def _confuse(self, images: Tensor, order: Tensor) -> Tensor:
        region, offset, first = _region_tables(images.shape[-1], self.grid, images.device)
        sources = torch.cat([first[order], first[-1:].expand(order.shape[0], 1)], 1)  # N×(grid²+1) first pixels
        return _permute_pixels(images, sources.gather(1, region.expand(order.shape[0], -1)) + offset)
