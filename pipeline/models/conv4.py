"""Conv-4: the four-block convolutional backbone of MAML.

Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks" (ICML 2017),
after Vinyals et al., "Matching Networks for One Shot Learning" (NeurIPS 2016): ``depth`` blocks of
[conv 3x3 (padding 1) - BatchNorm2d - ReLU - maxpool 2], ``width`` filters each, flattened at the end.
28x28 inputs give 64 features, 84x84 give 64 * 5 * 5 = 1600.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models.registry import check_flag, check_positive, probe_feature_dim, register_backbone


def conv_block(in_channels: int, out_channels: int, track_running_stats: bool = True,
               pool: bool = True) -> nn.Sequential:
    """conv 3x3 (no bias: BN follows) - BN - ReLU - maxpool 2: ``(B, Cin, H, W) -> (B, Cout, H/2, W/2)``
    (without `pool`, the size stays)."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
              nn.BatchNorm2d(out_channels, track_running_stats=track_running_stats), nn.ReLU()]
    return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)


class Conv4(nn.Module):
    """Conv-4 feature extractor: ``(B, C, S, S) -> (B, width * (S // 2**pools)**2)`` (`pools`, default `depth`: how
    many blocks, from the first, end with a max-pool; 3 keeps a 3×3 map of 28² Omniglot: 576 features, not 64).

    ``feature_dim`` is set at build time. The layers are plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` in
    ``self.blocks`` so later code can wrap each conv (scaling and shifting) or call the module through
    ``torch.func.functional_call``.
    """

    def __init__(self, in_channels: int, image_size: int, width: int | Sequence[int] = 64, depth: int = 4,
                 track_running_stats: bool = True, pools: int | None = None) -> None:
        super().__init__()
        widths = [in_channels] + ([width] * depth if isinstance(width, int) else list(width))
        pools = depth if pools is None else pools
        self.blocks = nn.Sequential(*(conv_block(cin, cout, track_running_stats, pool=i < pools)
                                      for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True))))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.feature_dim: int = probe_feature_dim(self, in_channels, image_size, "conv4")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` float -> features ``(B, D)``."""
        return self.blocks(x).flatten(1)  # (B, width, h, w) -> (B, D)


@register_backbone("conv4")
def conv4(*, in_channels: int, image_size: int, width: int | Sequence[int] = 64, depth: int = 4,
          track_running_stats: bool = True, pools: int | None = None) -> Conv4:
    """Build Conv-4 (Finn et al. 2017). ``image_size`` must be at least ``2**pools`` (``pools`` defaults to
    ``depth``: every block pools, as in the paper).

    ``track_running_stats=False`` gives MAML's transductive BatchNorm (batch statistics at test time
    too), which also keeps the forward free of buffer updates under ``torch.func.vmap``.
    """
    if isinstance(width, int):
        check_positive("conv4 option width", width)
    else:  # one width per block, e.g. [64, 64, 128, 256]: wide where the maps are small, so cheap
        if isinstance(width, str | bytes) or not isinstance(width, Sequence) or len(width) != depth:
            raise ConfigError(f"conv4 option width must be an int or a list of {depth} ints (one per block), "
                              f"got {width!r:.60}")
        for w in width:
            check_positive("conv4 option width", w)
    check_positive("conv4 option depth", depth)
    pools = depth if pools is None else pools
    check_positive("conv4 option pools", pools, minimum=0)
    if pools > depth:
        raise ConfigError(f"conv4 option pools must be at most depth ({depth}), got {pools}")
    check_positive(f"image_size for conv4 with {pools} pooling blocks", image_size, minimum=2**pools)
    track = check_flag("conv4 option track_running_stats", track_running_stats)
    return Conv4(in_channels, image_size, width=width, depth=depth, track_running_stats=track, pools=pools)
