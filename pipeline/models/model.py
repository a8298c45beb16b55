"""A few-shot model is a backbone plus a head, rebuilt from a JSON-serialisable `ModelSpec`.

The spec is what a checkpoint stores next to the weights (as nanoGPT stores its config), so any
tool can rebuild the exact architecture and load the state dict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models.heads import HEADS, build_head
from mtl.pipeline.models.registry import BACKBONES, build_backbone, check_positive, check_shape_args


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a `FewShotModel`; checked on construction.

    backbone: registry name ("conv4", "resnet12", "resnet18", "mobilenet_v3_small", ...)
    in_channels, image_size: the input ``(B, in_channels, image_size, image_size)``
    head: "linear" or "cosine";  n_classes: N, the head's output width
    options: keyword options for the backbone builder (e.g. ``{"width": 32}``); stored in JSON form,
    so tuples become lists and ``ModelSpec.from_dict(spec.to_dict()) == spec`` after a JSON trip.
    """

    backbone: str
    in_channels: int
    image_size: int
    head: str = "linear"
    n_classes: int = 5
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str):
            raise ConfigError(f"backbone must be a name, got {self.backbone!r}")
        BACKBONES.resolve(self.backbone)
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; valid heads: {', '.join(sorted(HEADS))}")
        check_shape_args(self.in_channels, self.image_size)
        check_positive("n_classes", self.n_classes)
        object.__setattr__(self, "options", _json_options(self.options))
        BACKBONES.check_options(self.backbone, self.options)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (a deep copy: mutating it leaves the spec alone)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Rebuild a spec from `to_dict` output; unknown or missing keys raise `ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"model spec must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            valid = ", ".join(sorted(known))
            raise ConfigError(f"model spec has unknown keys {unknown}; valid keys: {valid}")
        missing = [name for name in ("backbone", "in_channels", "image_size") if name not in data]
        if missing:
            raise ConfigError(f"model spec is missing keys {missing}")
        return cls(**data)


def _json_options(options: object) -> dict[str, Any]:
    """A JSON-normalised deep copy of ``options`` (tuples -> lists), or `ConfigError`."""
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"options must be a mapping of option names to values, got {options!r}")
    try:
        return json.loads(json.dumps(dict(options), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"options must be JSON-serialisable: {exc}") from exc


class FewShotModel(nn.Module):
    """``backbone`` (images -> features) followed by ``head`` (features -> logits).

    Keeping the two as named submodules lets an algorithm freeze or adapt them separately by
    parameter-name prefix (``backbone.``, ``head.``) under ``torch.func.functional_call``.
    In train mode BatchNorm updates its running statistics in place, so under ``torch.func.grad``
    pass the buffers in too, ``functional_call(model, (params, buffers), (x,))``; under ``vmap`` over
    tasks build the backbone with ``options={"track_running_stats": False}``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def feature_dim(self) -> int:
        """D, the width of `features`."""
        return int(self.backbone.feature_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` float -> features ``(B, D)``."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` float -> logits ``(B, N)``."""
        return self.head(self.backbone(x))


def build_model(spec: ModelSpec) -> FewShotModel:
    """The `FewShotModel` described by ``spec``, freshly initialised (seed with ``torch.manual_seed``)."""
    backbone = build_backbone(spec.backbone, in_channels=spec.in_channels, image_size=spec.image_size,
                              **spec.options)
    head = build_head(spec.head, feature_dim=backbone.feature_dim, n_classes=spec.n_classes)
    return FewShotModel(backbone, head)
