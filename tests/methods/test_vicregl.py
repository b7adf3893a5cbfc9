import torch

from fastssl.losses.vicregl import cell_centres
from fastssl.methods.vicreg import VICReg, VICRegConfig
from fastssl.methods.vicregl import VICRegL, VICRegLConfig
from pipelines.augment import CropParams, RandomResizedCrop
from pipelines.batch import ViewBatch, ViewMeta
from tests.methods.common import tiny_backbone

SMALL = {"proj_hidden": 16, "proj_dim": 16}


def small_vicregl(**overrides):
    cfg = VICRegLConfig(local_hidden=8, local_dim=8, num_matches=(7, 2), **SMALL, **overrides)
    return VICRegL(cfg, tiny_backbone()).to(memory_format=torch.channels_last)


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = torch.randn(2 * n, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    top_left = torch.randint(0, 8, (2 * n, 2), generator=g)
    boxes = torch.cat([top_left, torch.randint(16, 25, (2 * n, 2), generator=g)], 1)
    meta = {"global": ViewMeta(boxes, torch.rand(2 * n, generator=g) < 0.5)}
    return ViewBatch({"global": views}, torch.arange(n), torch.zeros(n, dtype=torch.long), meta)


def test_cell_centres_are_where_the_crop_took_each_cell_from():
    """Views cut by the pipeline's crop-and-flip from an image whose pixels hold their own
    coordinates: each 4×4-cell block of a 16 px view averages to its cell's source centre."""
    height, width = 40, 48
    rows = torch.arange(height).float()[:, None].expand(height, width)
    cols = torch.arange(width).float()[None, :].expand(height, width)
    image = torch.stack([rows, cols, torch.zeros(height, width)])[None].repeat(3, 1, 1, 1)
    boxes = torch.tensor([[5, 7, 24, 32], [0, 0, 40, 48], [10, 20, 16, 20]])
    flipped = torch.tensor([True, False, True])
    views = RandomResizedCrop(16)(image, CropParams(boxes), flipped)
    block_means = views[:, :2].unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2))  # N×2×4×4
    seen = block_means.flatten(2).transpose(1, 2) + 0.5  # pixel p spans [p, p + 1)
    torch.testing.assert_close(seen, cell_centres(boxes, flipped, 4, 4), atol=0.15, rtol=0)


def test_local_projector_learns_inside_the_student():
    torch.manual_seed(0)
    method = small_vicregl()
    encoded = method.encode(batch().views["global"], with_map=True)
    assert encoded.feature_map.shape == (8, 8, 4, 4)  # local embeddings of the 4×4 cells
    out = method(batch())
    out.loss.backward()
    assert method.teacher is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.local_projector.parameters())
    assert all(p.grad is not None for p in method.student.parameters())
    assert set(out.metrics) == {"global_loss", "local_loss"}
    torch.testing.assert_close(out.loss, 0.75 * out.metrics["global_loss"] + 0.25 * out.metrics["local_loss"])


def test_alpha_one_trains_vicreg():
    torch.manual_seed(0)
    vicregl = small_vicregl(alpha=1.0)  # the VICRegL authors' reductions: both terms averaged over the sides
    vicreg = VICReg(VICRegConfig(**SMALL, variance_reduction="mean", covariance_reduction="mean"), tiny_backbone())
    vicreg.to(memory_format=torch.channels_last)
    vicreg.student.load_state_dict(vicregl.student.state_dict(), strict=False)  # all but the local projector
    b = batch(seed=1)
    torch.testing.assert_close(vicregl(b).loss, vicreg(b).loss)


def test_flipping_a_view_changes_only_the_local_loss_with_a_flipped_grid():
    torch.manual_seed(0)
    method = small_vicregl(flip_grid=True)
    method.eval()  # BN from running statistics: the same images give the same embeddings
    b = batch(seed=2)
    out = method(b)
    meta = b.meta["global"]
    flipped = ViewBatch(b.views, b.indices, b.labels, {"global": ViewMeta(meta.boxes, ~meta.flipped)})
    other = method(flipped)
    torch.testing.assert_close(other.metrics["global_loss"], out.metrics["global_loss"])
    assert not torch.allclose(other.metrics["local_loss"], out.metrics["local_loss"])


def test_the_authors_unflipped_grid_ignores_flips():
    """The authors' --no-flip-grid 1 default (main_vicregl.py at 803ae4c): a flipped view's cell
    locations are those of the unflipped crop, so flipping changes no loss of the same images."""
    torch.manual_seed(0)
    method = small_vicregl()
    method.eval()
    b = batch(seed=2)
    meta = b.meta["global"]
    flipped = ViewBatch(b.views, b.indices, b.labels, {"global": ViewMeta(meta.boxes, ~meta.flipped)})
    torch.testing.assert_close(method(flipped).loss, method(b).loss)
