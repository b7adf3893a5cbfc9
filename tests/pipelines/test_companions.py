"""Batches of anchors and companions (BINGO's bags): each process's share holds its anchors
then one companion of each from the anchor's bag; every image is an anchor once an epoch;
two processes share out what one sees; a resumed epoch draws the same companions."""

import torch

from pipelines.loader import Loader
from pipelines.spec import ViewConfig
from pipelines.views import two_views
from tests.conftest import make_tensor_dataset

CPU = torch.device("cpu")


def loader(path, rank=0, world=1):
    made = Loader(path, two_views(ViewConfig(size=16)), 8, CPU, seed=5, rank=rank, world=world)
    n = len(made.train)
    # Image i's bag: the three images after it (in dataset order).
    made.with_companions((torch.arange(n)[:, None] + torch.arange(1, 4)) % n)
    return made


def test_each_anchor_comes_with_a_companion_from_its_bag_and_every_image_anchors_once(tmp_path):
    data = make_tensor_dataset(tmp_path / "d", train=32, test=8)
    made = loader(data)
    assert len(made) == 8  # 32 anchors, 4 a batch
    anchors = []
    for batch in made:
        first, second = batch.indices.chunk(2)
        assert all(((c - a) % 32).item() in (1, 2, 3) for a, c in zip(first, second, strict=True))
        anchors += first.tolist()
    assert sorted(anchors) == list(range(32))


def test_two_processes_share_out_the_batches_of_one_and_a_resumed_epoch_draws_the_same(tmp_path):
    data = make_tensor_dataset(tmp_path / "d", train=32, test=8)
    alone = [b.indices for b in loader(data)]
    ranks = [[b.indices for b in loader(data, rank, 2)] for rank in (0, 1)]
    for whole, zero, one in zip(alone, *ranks, strict=True):
        anchors, companions = whole.chunk(2)
        assert torch.equal(zero, torch.cat([anchors[:2], companions[:2]]))
        assert torch.equal(one, torch.cat([anchors[2:], companions[2:]]))
    resumed = loader(data)
    resumed.load_state_dict({**resumed.state_dict(), "step": 5})
    assert all(torch.equal(a, b) for a, b in zip([b.indices for b in resumed], alone[5:], strict=True))
