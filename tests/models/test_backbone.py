import torch

from fastssl.config import LocalCropsTrainConfig, ModelConfig, with_views
from fastssl.models.backbone import backbone_from_config
from fastssl.recipes.defaults import dataset_presets
from pipelines.spec import ViewConfig


def test_vit_backbone_pools_the_class_token_and_maps_the_patches():
    net = backbone_from_config(ModelConfig(arch="vit_tiny", patch_size=4), 32, 1)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    assert net.feature_dim == 192 and net(x).shape == (2, 192)
    assert net.forward_map(x).shape == (2, 192, 8, 8)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 192)  # local crops of another size


def test_split_bn_groups_follow_the_number_of_views():
    net = backbone_from_config(ModelConfig(width=4, norm="split_bn"), 32, 4)
    assert net.bn1.group_size == 4
    net(torch.randn(8, 3, 16, 16))  # two views of four images: two groups
    net(torch.randn(24, 3, 8, 8))  # six local crops of four images: six groups


def with_local():
    return LocalCropsTrainConfig(data=None, method=None, local_views=ViewConfig(size=16))  # type: ignore[arg-type]


def test_presets_change_every_view_field_in_proportion():
    presets = dataset_presets(with_local())
    tiny = presets["tiny-imagenet"]
    assert tiny.views.size == 64 and tiny.local_views.size == 32 and tiny.local_views.mean == tiny.views.mean
    assert presets["imagenette-224"].local_views.size == 112
    assert presets["stl10"].train_splits == ("train", "unlabeled")
    assert with_views(with_local(), blur_p=0.0).local_views.blur_p == 0.0


def test_forward_with_map_agrees_with_the_separate_calls():
    for cfg in (ModelConfig(width=4, norm="bn"), ModelConfig(arch="vit_tiny", patch_size=8)):
        net = backbone_from_config(cfg, 32, 1).eval()
        x = torch.randn(2, 3, 32, 32)
        features, feature_map = net.forward_with_map(x)
        torch.testing.assert_close(features, net(x))
        torch.testing.assert_close(feature_map, net.forward_map(x))
