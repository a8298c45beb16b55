"""Every registered backbone maps (B, C, S, S) images to (B, feature_dim) features."""

import pytest
import torch

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models import BACKBONES, build_backbone

NAMES = ["conv4", "resnet12", "resnet18", "mobilenet_v3_small"]
EXPECTED_DIMS = {
    ("conv4", 28): 64, ("conv4", 84): 1600,
    ("resnet12", 28): 640, ("resnet12", 84): 640,
    ("resnet18", 28): 512, ("resnet18", 84): 512,
    ("mobilenet_v3_small", 28): 576, ("mobilenet_v3_small", 84): 576,
}


def test_all_builtin_backbones_are_registered() -> None:
    assert set(NAMES) <= set(BACKBONES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", ["omniglot_batch", "mini_imagenet_batch"])
def test_forward_gives_feature_dim_features(name: str, batch: str, request: pytest.FixtureRequest) -> None:
    x = request.getfixturevalue(batch)
    backbone = build_backbone(name, in_channels=x.shape[1], image_size=x.shape[-1])
    features = backbone(x)
    assert features.shape == (x.shape[0], backbone.feature_dim)
    assert backbone.feature_dim == EXPECTED_DIMS[(name, x.shape[-1])]
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("name", NAMES)
def test_building_leaves_batchnorm_statistics_and_mode_alone(name: str) -> None:
    backbone = build_backbone(name, in_channels=1, image_size=28)
    assert backbone.training
    for module in backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert int(module.num_batches_tracked) == 0


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_gives_the_same_features(name: str, omniglot_batch: torch.Tensor) -> None:
    backbone = build_backbone(name, in_channels=1, image_size=28).eval()
    expected = backbone(omniglot_batch)
    backbone = backbone.to(memory_format=torch.channels_last)
    got = backbone(omniglot_batch.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_conv4_width_and_depth_options_change_the_feature_dim() -> None:
    backbone = build_backbone("conv4", in_channels=3, image_size=32, width=16, depth=3)
    assert backbone.feature_dim == 16 * 4 * 4
    assert backbone(torch.rand(2, 3, 32, 32)).shape == (2, 256)


def test_resnet12_channels_option_accepts_a_json_list() -> None:
    backbone = build_backbone("resnet12", in_channels=1, image_size=28, channels=[8, 16, 32, 48])
    assert backbone.feature_dim == 48


def test_torchvision_backbones_use_a_stride_one_stem_on_small_images() -> None:
    small = build_backbone("resnet18", in_channels=1, image_size=28)
    large = build_backbone("resnet18", in_channels=1, image_size=84)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)
    assert large.conv1.stride == (2, 2) and large.conv1.in_channels == 1
    mobile = build_backbone("mobilenet_v3_small", in_channels=1, image_size=28)
    assert mobile.features[0][0].stride == (1, 1)


def test_unknown_backbone_error_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="unknown backbone 'vit'") as info:
        build_backbone("vit", in_channels=3, image_size=84)
    for name in NAMES:
        assert name in str(info.value)


def test_unknown_option_error_lists_valid_options() -> None:
    with pytest.raises(ConfigError, match="no option 'hidden'.*width, depth"):
        build_backbone("conv4", in_channels=1, image_size=28, hidden=32)


@pytest.mark.parametrize(("name", "kwargs", "culprit"), [
    ("conv4", {"image_size": 8}, "image_size"),
    ("conv4", {"image_size": 28, "width": 0}, "width"),
    ("resnet12", {"image_size": 28, "channels": []}, "channels"),
    ("resnet12", {"image_size": 28, "channels": [8, -1]}, "channel width"),
    ("resnet12", {"image_size": 12}, "image_size"),
    ("resnet18", {"image_size": 28, "small_input": "yes"}, "small_input"),
    ("conv4", {"image_size": 0}, "image_size"),
    ("conv4", {"image_size": 28, "track_running_stats": "false"}, "track_running_stats"),
    ("mobilenet_v3_small", {"image_size": 28, "track_running_stats": 0}, "track_running_stats"),
])
def test_out_of_range_options_raise_config_error_naming_the_culprit(
        name: str, kwargs: dict, culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit):
        build_backbone(name, in_channels=1, **kwargs)


def test_bad_in_channels_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="in_channels"):
        build_backbone("conv4", in_channels=0, image_size=28)


def test_conv4_pools_keeps_a_spatial_map_in_its_features() -> None:
    assert build_backbone("conv4", in_channels=1, image_size=28, pools=3).feature_dim == 64 * 3 * 3
    assert build_backbone("conv4", in_channels=1, image_size=28).feature_dim == 64
    with pytest.raises(ConfigError, match="pools must be at most depth"):
        build_backbone("conv4", in_channels=1, image_size=28, pools=5)
