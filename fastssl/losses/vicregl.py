"""VICRegL — "VICRegL: Self-Supervised Learning of Local Visual Features" (Bardes, Ponce &
LeCun, NeurIPS 2022), §3.

VICReg on the pooled embeddings (the global criterion) plus VICReg on pairs of feature-map
cells of the two views (the local criterion), mixed as α·global + (1 − α)·local. A cell of
one view is paired with a cell of the other in two ways:

* by location: the cell whose centre, mapped back to source-image pixels through the view's
  crop box and flip, is nearest;
* by feature: the cell whose local embedding is nearest (L2).

Each way keeps only the ``num_matches`` best-matched cells of every image (the pairs most
likely to show the same content) and scores the kept pairs with the VICReg terms, whose
variance and covariance are taken over the batch for each kept slot (``fastssl.losses.vicreg``).

The reference is the authors' ``main_vicregl.py`` on their main branch (803ae4c, after
d14c226 "Fix local loss", which made every ordered pair of views count): its VICReg terms
average the two sides' variance and covariance (``reductions`` ("mean", "mean"); VICReg's
Eq. 6 sums them), its ``--l2_all_matches 1`` keeps every cell in the feature-based matching
(``all_feature_matches``), and its ``--no-flip-grid 1`` leaves a flipped view's cell
locations unflipped (the method's ``flip_grid`` False, ``cell_centres`` given no flips).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from fastssl.losses.precision import at_least_fp32
from fastssl.losses.vicreg import Reduction, vicreg_loss


def cell_centres(boxes: Tensor, flipped: Tensor, height: int, width: int) -> Tensor:
    """Source-image coordinates (y, x) of the centre of every cell of an ``height``×``width``
    feature map, for each view: M×(h·w)×2, cells in raster order.

    ``boxes``: M×4 crop boxes (top, left, height, width) in source pixels; ``flipped``: M
    bools, the view mirrored after cropping. Cell (i, j) covers rows i/h…(i+1)/h and columns
    j/w…(j+1)/w of the view, i.e. of the crop, whose columns run right to left when flipped.
    """
    top, left, crop_h, crop_w = at_least_fp32(boxes).unbind(1)
    rows = (torch.arange(height, device=boxes.device) + 0.5) / height  # fractions of the crop
    cols = (torch.arange(width, device=boxes.device) + 0.5) / width
    cols = torch.where(flipped[:, None], 1 - cols, cols)  # M×w
    y = top[:, None] + rows * crop_h[:, None]  # M×h
    x = left[:, None] + cols * crop_w[:, None]  # M×w
    y, x = torch.broadcast_tensors(y[:, :, None], x[:, None, :])
    return torch.stack([y, x], -1).flatten(1, 2)


def nearest_matches(distances: Tensor, num_matches: int) -> tuple[Tensor, Tensor]:
    """Each cell of the first map (``distances``: N×P×Q, to the Q cells of the second) and
    its nearest cell of the second; only the ``num_matches`` cells with the closest partners
    are kept. Returns (kept cells, their partners), N×K each, the kept cells in raster order
    (the authors' order, on which the per-slot statistics depend)."""
    nearest, partner = distances.min(dim=2)
    k = min(num_matches, distances.shape[1])
    kept = nearest.topk(k, dim=1, largest=False).indices.sort(dim=1).values
    return kept, partner.gather(1, kept)


def _take(maps: Tensor, cells: Tensor) -> Tensor:
    """Rows ``cells`` (N×K) of each image's N×P×D ``maps`` → N×K×D."""
    return maps.gather(1, cells[..., None].expand(-1, -1, maps.shape[-1]))


def matched_loss(
    maps_a: Tensor, maps_b: Tensor, distances: Tensor, num_matches: int, weights: tuple[float, float, float],
    reductions: tuple[Reduction, Reduction] = ("sum", "sum"),
) -> Tensor:
    """VICReg on ``maps_a``'s best-matched cells and their partners in ``maps_b``."""
    cells, partners = nearest_matches(distances, num_matches)
    return vicreg_loss(_take(maps_a, cells), _take(maps_b, partners), weights, reductions)


def local_loss(
    maps1: Tensor,
    maps2: Tensor,
    centres1: Tensor,
    centres2: Tensor,
    num_matches: tuple[int, int] = (7, 2),
    weights: tuple[float, float, float] = (25.0, 25.0, 1.0),
    all_feature_matches: bool = False,
    reductions: tuple[Reduction, Reduction] = ("sum", "sum"),
) -> Tensor:
    """The local criterion for two views: ``maps``: N×P×D local embeddings, ``centres``:
    N×P×2 source coordinates of their cells (``cell_centres``).

    The authors loop over the ordered pairs of views (1, 2) and (2, 1); each pair matches
    its first view's cells into the second keeping ``num_matches[0]``, and the second's into
    the first keeping ``num_matches[1]``, by location and by feature, averaging the two
    directions and summing the two ways (``_local_loss``, 803ae4c). Over both pairs that is each direction scored once
    with each ``num_matches``, all divided by 4. ``all_feature_matches`` keeps every cell in
    the feature-based matching (the authors' ``--l2_all_matches 1``).
    """
    maps1, maps2 = at_least_fp32(maps1), at_least_fp32(maps2)
    every_cell = maps1.shape[1]
    total = maps1.new_zeros(())
    for a, b, at_a, at_b in ((maps1, maps2, centres1, centres2), (maps2, maps1, centres2, centres1)):
        by_location = torch.cdist(at_least_fp32(at_a), at_least_fp32(at_b))
        by_feature = torch.cdist(a.detach(), b.detach())  # an index choice: no gradient through it
        for k in num_matches:
            total = total + matched_loss(a, b, by_location, k, weights, reductions)
            total = total + matched_loss(a, b, by_feature, every_cell if all_feature_matches else k, weights,
                                         reductions)
    return total / 4


class VICRegLLoss(NamedTuple):
    loss: Tensor  # α·global + (1 − α)·local
    global_loss: Tensor
    local_loss: Tensor


def vicregl_loss(
    z1: Tensor,
    z2: Tensor,
    maps1: Tensor,
    maps2: Tensor,
    centres1: Tensor,
    centres2: Tensor,
    alpha: float = 0.75,
    num_matches: tuple[int, int] = (7, 2),
    weights: tuple[float, float, float] = (25.0, 25.0, 1.0),
    all_feature_matches: bool = False,
    reductions: tuple[Reduction, Reduction] = ("sum", "sum"),
) -> VICRegLLoss:
    """α·VICReg(z1, z2) + (1 − α)·local criterion. ``z1``, ``z2``: N×D global embeddings;
    the rest as ``local_loss``."""
    global_term = vicreg_loss(z1, z2, weights, reductions)
    local_term = local_loss(maps1, maps2, centres1, centres2, num_matches, weights, all_feature_matches, reductions)
    return VICRegLLoss(alpha * global_term + (1 - alpha) * local_term, global_term, local_term)
