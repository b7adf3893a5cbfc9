"""The Loader warns, once, when a recipe's views are larger than the stored images."""

from __future__ import annotations

import warnings

import pytest
import torch

from pipelines.loader import Loader
from pipelines.spec import ViewConfig
from pipelines.views import ViewRecipe
from tests.conftest import make_tensor_dataset


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """Images stored at 16 px."""
    return make_tensor_dataset(tmp_path_factory.mktemp("data") / "small", train=8, test=4, size=16)


def _loader(root, groups: dict[str, list[ViewConfig]]) -> Loader:
    return Loader(root, ViewRecipe(groups), 4, torch.device("cpu"))


def test_views_larger_than_the_images_warn_once(small_dataset):
    # Two groups too large (as a 128 px preset's global views and local crops on 64 px data):
    # one warning, naming both.
    groups = {"global": [ViewConfig(size=32)] * 2, "local": [ViewConfig(size=24)] * 4}
    with pytest.warns(UserWarning, match="larger than the stored 16×16 images") as caught:
        _loader(small_dataset, groups)
    assert len(caught) == 1
    assert "global 32 px, local 24 px" in str(caught[0].message)


def test_views_that_fit_do_not_warn(small_dataset):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _loader(small_dataset, {"global": [ViewConfig(size=16)] * 2, "local": [ViewConfig(size=8)] * 2})


def test_only_rank_zero_warns(small_dataset):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        too_large = ViewRecipe({"global": [ViewConfig(size=32)] * 2})
        Loader(small_dataset, too_large, 4, torch.device("cpu"), rank=1, world=2)


def test_views_upsampled_on_purpose_say_so_once_per_data_set(tmp_path):
    # ImageNette v2-160 at the study's 224 px: the preset's reason replaces the advice, and the
    # probes' loaders on the same data set (other view groups) do not repeat it.
    data = make_tensor_dataset(tmp_path / "small160", train=8, test=4, size=16)
    reason = "the study's views of a smaller data set"
    with pytest.warns(UserWarning, match=f"training on upsampled views \\(on purpose: {reason}\\)") as caught:
        Loader(data, ViewRecipe({"global": [ViewConfig(size=32)] * 2}), 4, torch.device("cpu"), upsampled=reason)
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _loader(data, {"global": [ViewConfig(size=24)]})
