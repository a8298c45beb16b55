"""The registry refuses duplicate names and builders that are not keyword-only."""

import pytest
from torch import nn

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models import BACKBONES, Registry, register_backbone


def test_registering_an_existing_backbone_name_raises() -> None:
    before = BACKBONES["conv4"]
    with pytest.raises(ConfigError, match="'conv4' is already registered"):
        @register_backbone("conv4")
        def other(*, in_channels: int, image_size: int) -> nn.Module:
            return nn.Identity()
    assert BACKBONES["conv4"] is before


def test_a_fresh_registry_takes_a_name_once() -> None:
    registry = Registry("thing")

    @registry.register("a")
    def build_a(*, in_channels: int, image_size: int) -> nn.Module:
        return nn.Identity()

    assert list(registry) == ["a"] and registry.resolve("a") is build_a
    with pytest.raises(ConfigError, match="already registered"):
        registry.register("a")(build_a)
    with pytest.raises(ConfigError, match="unknown thing 'b'; valid names: a"):
        registry.resolve("b")


def test_positional_builders_are_refused() -> None:
    registry = Registry("thing")
    with pytest.raises(TypeError, match="keyword-only"):
        @registry.register("positional")
        def build(in_channels: int, image_size: int) -> nn.Module:
            return nn.Identity()
