"""The geometric view ops (vertical flip, rotation by 90°, LoRot-I, DCL's region confusion):
each against a plain per-image reference with the same parameters, their distributions, and
the view pipeline with them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipelines.augment import ViewParams
from pipelines.geometry import LocalRotation, RandomRotate90, RandomVerticalFlip, RegionConfusion
from pipelines.spec import ViewConfig
from pipelines.views import ViewPipeline, ViewRecipe


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def generator(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def per_image(op, x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    return torch.stack([op(image) if c else image for image, c in zip(x, chosen, strict=True)])


def quadrant_slices(quadrant: int, size: int) -> tuple[slice, slice]:
    side = size // 2
    top, left = (size - side) * (quadrant // 2), (size - side) * (quadrant % 2)
    return slice(top, top + side), slice(left, left + side)


def local_rotation_reference(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    for i, (quadrant, k) in enumerate(params.tolist()):
        rows, cols = quadrant_slices(quadrant, x.shape[-1])
        out[i, :, rows, cols] = torch.rot90(x[i, :, rows, cols], k, (-2, -1))
    return out


def region_confusion_reference(x: torch.Tensor, order: torch.Tensor, grid: int) -> torch.Tensor:
    """Region by region: output region b is the input's region ``order[b]``."""
    out, side = x.clone(), x.shape[-1] // grid

    def block(b: int) -> tuple[slice, slice]:
        return slice(b // grid * side, (b // grid + 1) * side), slice(b % grid * side, (b % grid + 1) * side)

    for i in range(x.shape[0]):
        for b, source in enumerate(order[i].tolist()):
            out[(i, slice(None), *block(b))] = x[(i, slice(None), *block(source))]
    return out


@pytest.mark.parametrize("size", [8, 9])
def test_flip_and_rotation_match_per_image_references(size):
    x = images(10, size)
    vflip, rotate = RandomVerticalFlip(0.5), RandomRotate90(0.5)
    flipped, rotated = vflip.sample(10, generator()), rotate.sample(10, generator(2))
    assert 0 < flipped.sum() < 10 and 0 < rotated.sum() < 10
    assert torch.equal(vflip(x, flipped), per_image(lambda image: image.flip(-2), x, flipped))
    assert torch.equal(rotate(x, rotated), per_image(lambda image: torch.rot90(image, 1, (-2, -1)), x, rotated))


@pytest.mark.parametrize("size", [8, 9, 32])
def test_local_rotation_matches_a_per_image_reference(size):
    x = images(12, size)
    op = LocalRotation(0.75)
    params = op.sample(12, generator())
    assert torch.equal(op(x, params), local_rotation_reference(x, params))


def test_local_rotation_moves_only_the_chosen_quadrant_by_every_k():
    size, n = 9, 400
    op = LocalRotation(0.5)
    params = op.sample(n, generator(3))
    quadrant, k = params.unbind(1)
    assert set(k[k > 0].tolist()) == {1, 2, 3} and set(quadrant[k > 0].tolist()) == {0, 1, 2, 3}
    assert 0.4 < (k > 0).float().mean() < 0.6
    x = images(n, size, seed=4)
    changed = (op(x, params) != x).any(1)  # N×S×S
    for i in range(n):
        inside = torch.zeros(size, size, dtype=torch.bool)
        if k[i] > 0:
            inside[quadrant_slices(int(quadrant[i]), size)] = True
        assert not (changed[i] & ~inside).any()  # the odd size's middle row and column never move
        assert changed[i].any() == (k[i] > 0)


@pytest.mark.parametrize("size, grid", [(32, 7), (21, 7), (9, 4), (8, 1)])
def test_region_confusion_matches_a_per_image_reference(size, grid):
    x = images(8, size)
    op = RegionConfusion(0.75, grid, 2.0)
    order = op.sample(8, generator())
    assert torch.equal(op(x, order), region_confusion_reference(x, order, grid))


def test_region_confusion_draws_the_papers_row_then_column_sort():
    n, grid, k, p = 6, 5, 1.5, 0.5
    order = RegionConfusion(p, grid, k).sample(n, generator(5))
    g = generator(5)  # the same draws, in the op's order: applied, row keys, column keys
    applied = torch.rand(n, generator=g) < p
    position = torch.arange(grid, dtype=torch.float32)
    row_keys = (position + k * (2 * torch.rand(n, grid, grid, generator=g) - 1)).tolist()
    column_keys = (position + k * (2 * torch.rand(n, grid, grid, generator=g) - 1)).tolist()
    for i in range(n):
        regions = [[(row, col) for col in range(grid)] for row in range(grid)]
        if applied[i]:
            regions = [[regions[r][c] for c in sorted(range(grid), key=row_keys[i][r].__getitem__)]
                       for r in range(grid)]
            by_column = [sorted(range(grid), key=column_keys[i][c].__getitem__) for c in range(grid)]
            regions = [[regions[by_column[c][r]][c] for c in range(grid)] for r in range(grid)]
        assert order[i].tolist() == [row * grid + col for line in regions for row, col in line]


def test_region_confusion_is_a_permutation_within_the_neighbourhood():
    n, grid, k = 500, 7, 2.0
    order = RegionConfusion(0.5, grid, k).sample(n, generator(6))
    assert torch.equal(order.sort(1).values, torch.arange(grid * grid).expand(n, -1))
    target = torch.arange(grid * grid)
    assert ((order // grid - target // grid).abs() < 2 * k).all()  # rows
    assert ((order % grid - target % grid).abs() < 2 * k).all()  # columns
    moved = (order != target).any(1)
    assert 0.4 < moved.float().mean() < 0.6
    assert ((order % grid - target % grid).abs() == 3).any() and ((order // grid - target // grid).abs() == 3).any()


def test_region_confusion_refuses_a_grid_larger_than_the_view():
    with pytest.raises(ValueError, match="do not fit"):
        RegionConfusion(1.0, 7)(images(2, 6), torch.arange(49).expand(2, -1).flip(1))
    with pytest.raises(ValueError, match="neighbourhood"):
        RegionConfusion(1.0, 7, -1.0)


def test_probability_zero_leaves_the_images_and_the_generator_alone():
    x = images(6, 9)
    g = generator()
    before = g.get_state()
    ops = (RandomVerticalFlip(0.0), RandomRotate90(0.0), LocalRotation(0.0), RegionConfusion(0.0, 4))
    for op in ops:
        assert torch.equal(op(x, op.sample(6, g)), x)
    assert torch.equal(g.get_state(), before)


GEOMETRY = ViewConfig(size=28, vflip_p=0.5, rotate_p=0.5, local_rotation_p=0.7, region_confusion_p=0.7,
                      region_grid=4, solarize_p=0.5, blur_p=1.0)


def batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator(seed))
    return pixels, torch.tensor([[32, 32]]).expand(n, 2)


def test_the_pipeline_applies_the_ops_one_after_another():
    pictures, sizes = batch(6)
    pipeline = ViewPipeline([GEOMETRY, dataclasses.replace(GEOMETRY, region_confusion_p=0.0)])
    assert pipeline.geometric and not ViewPipeline([ViewConfig()]).geometric  # no fused kernel for these
    params = pipeline.sample(sizes, generator())
    views, meta = pipeline.apply(pictures, params)
    assert torch.equal(meta.boxes, params.crop.boxes) and torch.equal(meta.flipped, params.flip)  # crop geometry only
    x = pipeline.crop(torch.cat([pictures] * 2), params.crop, params.flip)
    x = per_image(lambda image: image.flip(-2), x, params.vflip)
    x = per_image(lambda image: torch.rot90(image, 1, (-2, -1)), x, params.rotate)
    x = local_rotation_reference(x, params.local_rotation)
    x = region_confusion_reference(x, params.region_order, GEOMETRY.region_grid)
    x = pipeline.jitter(x, params.jitter)
    x = pipeline.grayscale(x, params.grayscale)
    x = pipeline.blur(x, params.blur_sigma)
    x = pipeline.solarize(x, params.solarize)
    torch.testing.assert_close(views, pipeline.normalize(x), atol=0, rtol=0)
    assert (params.region_order[6:] == torch.arange(16)).all()  # the second view's own config
    assert params.vflip.any() and params.rotate.any() and (params.local_rotation[:, 1] > 0).any()


def test_the_geometric_ops_leave_the_other_draws_as_they_were():
    sizes = batch(5)[1]
    plain = ViewPipeline([ViewConfig()] * 2).sample(sizes, generator())
    drawn = ViewPipeline([dataclasses.replace(GEOMETRY, size=32)] * 2).sample(sizes, generator())
    assert torch.equal(plain.crop.boxes, drawn.crop.boxes) and torch.equal(plain.jitter.factors, drawn.jitter.factors)
    assert not plain.vflip.any() and not plain.rotate.any() and not plain.local_rotation.any()
    assert (plain.region_order == torch.arange(49)).all()


def test_a_share_of_the_batch_gets_the_full_batchs_views():
    pictures, sizes = batch(8, seed=2)
    recipe = ViewRecipe({"global": [GEOMETRY] * 2})
    full = recipe(pictures, sizes, generator(3))[0]["global"]
    half = recipe(pictures[4:], sizes, generator(3), offset=4)[0]["global"]
    torch.testing.assert_close(half, full[torch.tensor([4, 5, 6, 7, 12, 13, 14, 15])])


def test_views_of_one_group_share_the_region_grid():
    with pytest.raises(ValueError, match="must share 'region_grid'"):
        ViewPipeline([GEOMETRY, dataclasses.replace(GEOMETRY, region_grid=7)])


def test_parameters_made_without_the_geometric_ops_still_work():
    pictures, sizes = batch(4)
    pipeline = ViewPipeline([GEOMETRY])
    params = pipeline.sample(sizes, generator())
    bare = dataclasses.replace(params, vflip=None, rotate=None, local_rotation=None, region_order=None)
    share = ViewParams.concatenate([bare.take(torch.arange(2)), bare.take(torch.arange(2, 4))])
    assert share.vflip is None and share.region_order is None
    plain = ViewPipeline([dataclasses.replace(GEOMETRY, vflip_p=0.0, rotate_p=0.0, local_rotation_p=0.0,
                                              region_confusion_p=0.0)])
    expected = plain.apply(pictures, plain.sample(sizes, generator()))[0]  # the same draws but the geometric ones
    torch.testing.assert_close(pipeline.apply(pictures, share)[0], expected, atol=0, rtol=0)
