"""MLP: the fully connected regression network of MAML.

Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks" (ICML 2017),
§5.1: sine-wave regression with a 1 → 40 → 40 → 1 network, ReLU between layers. Unlike the image
backbones it takes vectors ``(B, in_channels)``, not images; its "features" are its outputs, so
``feature_dim == out_features`` and the model's body is the whole predictor (no head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models.registry import check_flag, check_positive, register_backbone


class MLP(nn.Module):
    """Linear - ReLU - ... - Linear: ``(..., in_features) -> (..., out_features)``.

    The layers are plain ``nn.Linear`` in ``self.layers`` with PyTorch's default initialisation, and
    the forward has no in-place ops or buffers, so it runs unchanged under
    ``torch.func.functional_call`` / ``grad`` / ``vmap``.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (40, 40), out_features: int = 1) -> None:
        super().__init__()
        widths = [in_features, *hidden]
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(cin, cout), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], out_features))
        self.layers = nn.Sequential(*layers)
        self.feature_dim: int = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs ``(B, in_features)`` (any leading dims) -> outputs ``(B, out_features)``."""
        return self.layers(x)


@register_backbone("mlp")
def mlp(*, in_channels: int, image_size: int, hidden: Sequence[int] = (40, 40), out_features: int = 1,
        track_running_stats: bool = True) -> MLP:
    """Build MAML's regression MLP (Finn et al. 2017, §5.1) for ``(B, in_channels)`` vector inputs.

    ``in_channels`` is the input dimension (1 for the sine task). ``image_size`` is accepted because
    every registered builder takes it, and ignored: there are no images (pass 1). ``hidden`` lists the
    hidden widths (a JSON list is fine; empty gives a linear model). ``track_running_stats`` is
    accepted for the same reason and checked, but there is no BatchNorm for it to affect.
    """
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence):
        raise ConfigError(f"mlp option hidden must be a list of ints, got {hidden!r}")
    widths = tuple(check_positive("mlp hidden width", h) for h in hidden)
    out = check_positive("mlp option out_features", out_features)
    check_positive("mlp in_channels (the input dimension)", in_channels)
    check_flag("mlp option track_running_stats", track_running_stats)
    return MLP(in_channels, hidden=widths, out_features=out)
