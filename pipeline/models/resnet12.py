"""ResNet-12: the few-shot residual backbone of MetaOptNet and meta-transfer learning.

Lee et al., "Meta-Learning with Differentiable Convex Optimization" (MetaOptNet, CVPR 2019) and
Sun et al., "Meta-Transfer Learning for Few-Shot Learning" (CVPR 2019), after Oreshkin et al.,
TADAM (NeurIPS 2018). Four residual blocks; each is three conv 3x3 - BN - LeakyReLU(0.1) layers
(the third activation applied after the residual sum) with a conv 1x1 - BN shortcut, then maxpool 2.
Channels (64, 160, 320, 640), global average pool -> 640 features on 28x28 and 84x84 alike.
DropBlock, which MetaOptNet adds for regularisation, is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models.registry import check_flag, check_positive, probe_feature_dim, register_backbone

_SLOPE = 0.1


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, track: bool) -> nn.Sequential:
    """conv (no bias, BN follows) - BN: ``(B, Cin, H, W) -> (B, Cout, H, W)``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels, track_running_stats=track),
    )


class ResidualBlock(nn.Module):
    """Three conv-BN layers with a 1x1 conv-BN shortcut, then maxpool 2.

    ``(B, Cin, H, W) -> (B, Cout, H // 2, W // 2)``. No in-place ops, so the block runs unchanged
    under ``torch.func.functional_call`` / ``grad`` / ``vmap``.
    """

    def __init__(self, in_channels: int, out_channels: int, track_running_stats: bool = True) -> None:
        super().__init__()
        track = track_running_stats
        self.layer1 = _conv_bn(in_channels, out_channels, 3, track)
        self.layer2 = _conv_bn(out_channels, out_channels, 3, track)
        self.layer3 = _conv_bn(out_channels, out_channels, 3, track)
        self.shortcut = _conv_bn(in_channels, out_channels, 1, track)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, H, W) -> (B, Cout, H // 2, W // 2)``."""
        out = F.leaky_relu(self.layer1(x), _SLOPE)
        out = F.leaky_relu(self.layer2(out), _SLOPE)
        out = F.leaky_relu(self.layer3(out) + self.shortcut(x), _SLOPE)
        return self.pool(out)


class ResNet12(nn.Module):
    """ResNet-12 feature extractor: ``(B, C, S, S) -> (B, channels[-1])`` (global average pool)."""

    def __init__(self, in_channels: int, image_size: int, channels: Sequence[int] = (64, 160, 320, 640),
                 track_running_stats: bool = True) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.blocks = nn.Sequential(*(ResidualBlock(cin, cout, track_running_stats)
                                      for cin, cout in zip(widths[:-1], widths[1:], strict=True)))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu",
                                        a=_SLOPE)
        self.feature_dim: int = probe_feature_dim(self, in_channels, image_size, "resnet12")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` float -> features ``(B, channels[-1])``."""
        return self.blocks(x).mean(dim=(2, 3))  # (B, C', h, w) -> (B, C')


@register_backbone("resnet12")
def resnet12(*, in_channels: int, image_size: int, channels: Sequence[int] = (64, 160, 320, 640),
             track_running_stats: bool = True) -> ResNet12:
    """Build ResNet-12 (Lee et al. 2019; Sun et al. 2019). ``image_size`` must be at least 2**len(channels).

    ``channels`` may be a list (as it comes back from JSON); ``track_running_stats=False`` uses batch
    statistics at test time too, and keeps the forward free of buffer updates under ``vmap``.
    """
    if isinstance(channels, str | bytes) or not isinstance(channels, Sequence) or not channels:
        raise ConfigError(f"resnet12 option channels must be a non-empty list of ints, got {channels!r}")
    widths = tuple(check_positive("resnet12 channel width", c) for c in channels)
    check_positive(f"image_size for resnet12 with {len(widths)} blocks", image_size,
                   minimum=2 ** len(widths))
    track = check_flag("resnet12 option track_running_stats", track_running_stats)
    return ResNet12(in_channels, image_size, channels=widths, track_running_stats=track)
