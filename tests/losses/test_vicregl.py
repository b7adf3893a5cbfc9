"""VICRegL's location geometry and local loss against hand-made views and a loop-by-loop
transcription of the authors' matching."""

import math

import torch

from fastssl.losses.vicreg import vicreg_loss
from fastssl.losses.vicregl import cell_centres, local_loss, nearest_matches, vicregl_loss

WEIGHTS = (25.0, 25.0, 1.0)


def matched_partners(boxes, flipped, num_matches, grid=4):
    """Cells of view 0 kept by location matching into view 1, and their partners."""
    centres = cell_centres(torch.tensor(boxes), torch.tensor(flipped), grid, grid)
    cells, partners = nearest_matches(torch.cdist(centres[:1], centres[1:]), num_matches)
    return cells[0].tolist(), partners[0].tolist()


def test_a_flipped_copy_matches_the_mirrored_cell():
    # Same 16×16 crop, the second view mirrored: cell (i, j) shows what cell (i, 3 − j) shows.
    cells, partners = matched_partners([[4, 8, 16, 16], [4, 8, 16, 16]], [False, True], num_matches=16)
    assert cells == list(range(16))
    assert partners == [4 * i + 3 - j for i in range(4) for j in range(4)]


def test_shifted_flipped_crops_match_the_cells_over_the_same_pixels():
    # View 0: rows 0–23, columns 0–23, cells of 6 px (centres 3, 9, 15, 21).
    # View 1: rows 6–29, columns 12–35, mirrored: row centres 9, 15, 21, 27 and column
    # centres 33, 27, 21, 15. The two views share the source pixels of view 0's cells
    # (i ≥ 1, j ≥ 2), which view 1 shows at (i − 1, 5 − j).
    cells, partners = matched_partners([[0, 0, 24, 24], [6, 12, 24, 24]], [False, True], num_matches=6)
    expected = [(4 * i + j, 4 * (i - 1) + 5 - j) for i in (1, 2, 3) for j in (2, 3)]
    assert list(zip(cells, partners, strict=True)) == expected


def test_cell_centres_follow_crop_and_flip():
    centres = cell_centres(torch.tensor([[10, 20, 8, 16]]), torch.tensor([True]), 2, 4)
    rows = [10 + 2, 10 + 6]  # 8 px tall crop in 2 cells
    cols = [20 + 14, 20 + 10, 20 + 6, 20 + 2]  # 16 px wide in 4 cells, right to left
    assert centres[0].tolist() == [[r, c] for r in rows for c in cols]


# --- the local loss against the authors' structure, written with loops -------------------


def distance(u, v):
    return math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(u, v, strict=True)))


def matched_sets(x, y, x_at, y_at, k):
    """neirest_neighbores (main_vicregl.py), image by image: each cell of x and its nearest
    cell of y (by the positions ``x_at``/``y_at``); keep the k closest, in cell order."""
    kept_x, kept_y = [], []
    for b in range(len(x)):
        pairs = []
        for i in range(len(x_at[b])):
            dists = [distance(x_at[b][i], y_at[b][j]) for j in range(len(y_at[b]))]
            nearest = min(range(len(dists)), key=dists.__getitem__)
            pairs.append((dists[nearest], i, nearest))
        kept = sorted(sorted(pairs)[:k], key=lambda pair: pair[1])
        kept_x.append(torch.stack([x[b, i] for _, i, _ in kept]))
        kept_y.append(torch.stack([y[b, j] for _, _, j in kept]))
    return torch.stack(kept_x), torch.stack(kept_y)


def local_reference(maps1, maps2, centres1, centres2, num_matches):
    """_local_loss over both ordered pairs of views, averaged (what local_loss means to do):
    each pair's feature-based and location-based terms, each the mean of two directions."""
    views = [(maps1, centres1), (maps2, centres2)]
    total = 0.0
    for first, second in ((0, 1), (1, 0)):
        (a, at_a), (b, at_b) = views[first], views[second]
        feature = 0.5 * (vicreg_loss(*matched_sets(a, b, a.detach(), b.detach(), num_matches[0]), WEIGHTS)
                         + vicreg_loss(*matched_sets(b, a, b.detach(), a.detach(), num_matches[1]), WEIGHTS))
        location = 0.5 * (vicreg_loss(*matched_sets(a, b, at_a, at_b, num_matches[0]), WEIGHTS)
                          + vicreg_loss(*matched_sets(b, a, at_b, at_a, num_matches[1]), WEIGHTS))
        total = total + feature + location
    return total / 2


def random_views(n=5, grid=3, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps1 = torch.randn(n, grid * grid, d, generator=g, requires_grad=True)
    maps2 = (0.6 * maps1.detach() + torch.randn(n, grid * grid, d, generator=g)).requires_grad_()
    # Real-valued boxes so that no two distances tie.
    top_left, size = 20 * torch.rand(2 * n, 2, generator=g), 12 + 20 * torch.rand(2 * n, 2, generator=g)
    centres = cell_centres(torch.cat([top_left, size], 1), torch.rand(2 * n, generator=g) < 0.5, grid, grid)
    return maps1, maps2, *centres.chunk(2)


def test_local_loss_value_and_gradients_match_the_loops():
    maps1, maps2, centres1, centres2 = random_views()
    loss = local_loss(maps1, maps2, centres1, centres2, num_matches=(4, 2), weights=WEIGHTS)
    reference = local_reference(maps1, maps2, centres1, centres2, (4, 2))
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(loss, (maps1, maps2))
    reference_grads = torch.autograd.grad(reference, (maps1, maps2))
    for got, want in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_alpha_one_is_vicreg():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(5, 6, generator=g, requires_grad=True)
    z2 = torch.randn(5, 6, generator=g, requires_grad=True)
    maps1, maps2, centres1, centres2 = random_views()
    parts = vicregl_loss(z1, z2, maps1, maps2, centres1, centres2, alpha=1.0, num_matches=(4, 2))
    torch.testing.assert_close(parts.loss, vicreg_loss(z1, z2), rtol=0, atol=0)
    grads = torch.autograd.grad(parts.loss, (maps1, maps2))
    assert all(grad.abs().max() == 0 for grad in grads)
    mixed = vicregl_loss(z1, z2, maps1, maps2, centres1, centres2, alpha=0.25, num_matches=(4, 2))
    torch.testing.assert_close(mixed.loss, 0.25 * mixed.global_loss + 0.75 * mixed.local_loss)


def test_all_feature_matches_keeps_every_cell():
    maps1, maps2, centres1, centres2 = random_views(seed=2)
    every = local_loss(maps1, maps2, centres1, centres2, (4, 2), WEIGHTS, all_feature_matches=True)
    same = local_loss(maps1, maps2, centres1, centres2, (4, 2), WEIGHTS)
    assert not torch.allclose(every, same)
    # Feature-matched sets of all 9 cells, location-matched as before.
    feature = sum(vicreg_loss(*matched_sets(a, b, a.detach(), b.detach(), 9), WEIGHTS)
                  for a, b in ((maps1, maps2), (maps2, maps1)))
    location = sum(vicreg_loss(*matched_sets(a, b, at_a, at_b, k), WEIGHTS)
                   for a, b, at_a, at_b in ((maps1, maps2, centres1, centres2), (maps2, maps1, centres2, centres1))
                   for k in (4, 2))
    torch.testing.assert_close(every, (2 * feature + location) / 4, rtol=1e-5, atol=1e-5)
