"""Backbone registry: name -> keyword-only builder, in the style of torchvision's model registry.

A builder has the signature ``builder(*, in_channels: int, image_size: int, **options) -> nn.Module``
and returns a feature extractor mapping ``(B, C, H, W)`` float images to ``(B, D)`` features, with an
int attribute ``feature_dim`` (D). Builders check their own options and raise `ConfigError`; the
registry checks names and option names, so a typo fails before any weights are allocated.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from mtl.pipeline.errors import ConfigError

Builder = Callable[..., nn.Module]

_SHAPE_ARGS = ("in_channels", "image_size")


class Registry(Mapping[str, Builder]):
    """A read-only mapping of names to builders that refuses duplicate names.

    ``registry[name]`` raises `KeyError` like any mapping; `resolve` raises `ConfigError` naming the
    valid choices, which is what code handling user input should call.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Builder] = {}

    def __getitem__(self, name: str) -> Builder:
        return self._builders[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)

    def register(self, name: str) -> Callable[[Builder], Builder]:
        """Decorator adding ``builder`` under ``name``; a second builder for the same name is refused."""

        def decorate(builder: Builder) -> Builder:
            if name in self._builders:
                raise ConfigError(f"{self.kind} {name!r} is already registered "
                                  f"(by {self._builders[name].__qualname__})")
            _check_signature(name, builder)
            self._builders[name] = builder
            return builder

        return decorate

    def resolve(self, name: str) -> Builder:
        """The builder for ``name``, or `ConfigError` listing every valid name."""
        if name not in self._builders:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid names: {', '.join(sorted(self))}")
        return self._builders[name]

    def check_options(self, name: str, options: Mapping[str, Any]) -> None:
        """Raise `ConfigError` if ``options`` holds a name the builder for ``name`` does not accept."""
        params = inspect.signature(self.resolve(name)).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        valid = [p for p in params if p not in _SHAPE_ARGS]
        for key in options:
            if key in _SHAPE_ARGS:
                raise ConfigError(f"{key!r} is a model field, not an option of {self.kind} {name!r}")
            if key not in valid:
                choices = ", ".join(valid) if valid else "none"
                raise ConfigError(f"{self.kind} {name!r} has no option {key!r}; valid options: {choices}")


def _check_signature(name: str, builder: Builder) -> None:
    """Builders are keyword-only and take the two shape arguments (a programming error otherwise)."""
    params = inspect.signature(builder).parameters
    positional = [p for p in params.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY
                  and p.kind is not inspect.Parameter.VAR_KEYWORD]
    missing = [arg for arg in _SHAPE_ARGS if arg not in params]
    if positional or missing:
        raise TypeError(f"builder for {name!r} must be keyword-only and take {', '.join(_SHAPE_ARGS)}")


BACKBONES = Registry("backbone")


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering a backbone builder under ``name`` in `BACKBONES`; duplicates raise."""
    return BACKBONES.register(name)


def build_backbone(name: str, *, in_channels: int, image_size: int, **options: Any) -> nn.Module:
    """Build the backbone ``name`` for ``(B, in_channels, image_size, image_size)`` inputs.

    Returns a module mapping images ``(B, C, H, W)`` to features ``(B, D)`` with ``feature_dim == D``.
    Unknown names or options, and out-of-range values, raise `ConfigError`.
    """
    builder = BACKBONES.resolve(name)
    check_shape_args(in_channels, image_size)
    BACKBONES.check_options(name, options)
    backbone = builder(in_channels=in_channels, image_size=image_size, **options)
    if not isinstance(getattr(backbone, "feature_dim", None), int):
        raise TypeError(f"backbone {name!r} was built without an int `feature_dim`")
    return backbone


def check_shape_args(in_channels: int, image_size: int) -> None:
    """Raise `ConfigError` unless both are positive ints."""
    for label, value in (("in_channels", in_channels), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{label} must be a positive int, got {value!r}")


def check_positive(label: str, value: object, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum``, else `ConfigError` naming ``label``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{label} must be an int >= {minimum}, got {value!r}")
    return value


def check_flag(label: str, value: object) -> bool:
    """``value`` if it is a bool, else `ConfigError` naming ``label`` (so "false" is not truthy)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{label} must be true or false, got {value!r}")
    return value


@torch.no_grad()
def probe_feature_dim(backbone: nn.Module, in_channels: int, image_size: int, name: str) -> int:
    """D for ``backbone``, found by one dummy forward of a ``(2, C, S, S)`` zero batch.

    The probe runs in eval mode so BatchNorm running statistics are left untouched, then restores
    the previous mode; two images, so BatchNorm without running statistics has a batch to normalise.
    An image too small for the architecture becomes a `ConfigError`.
    """
    was_training = backbone.training
    backbone.eval()
    param = next(backbone.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        out = backbone(torch.zeros(2, in_channels, image_size, image_size, device=device))
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"image_size {image_size} is too small for backbone {name!r}: {exc}") from exc
    finally:
        backbone.train(was_training)
    if out.dim() != 2:
        raise TypeError(f"backbone {name!r} returned shape {tuple(out.shape)}, expected (B, D)")
    return int(out.shape[1])
