"""torchvision ResNet-18 and MobileNetV3-Small as feature extractors, randomly initialised.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016) and Howard et al., "Searching
for MobileNetV3" (ICCV 2019), built by torchvision with ``weights=None``: nothing is ever downloaded.
Each is adapted to ``in_channels`` (the first conv is replaced) and, for images smaller than
``SMALL_INPUT`` pixels, to small inputs (a stride-1 stem, as CIFAR ResNets do), and its classifier is
replaced by ``nn.Identity`` so the forward returns pooled features: 512 (ResNet-18) or 576
(MobileNetV3-Small).
"""

from __future__ import annotations

import torchvision
from torch import nn
from torch.func import replace_all_batch_norm_modules_

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models.registry import check_flag, probe_feature_dim, register_backbone

SMALL_INPUT = 64


def _is_small(image_size: int, small_input: bool | None) -> bool:
    """Use the small-input stem when asked, or by default when ``image_size < SMALL_INPUT``."""
    if small_input is None:
        return image_size < SMALL_INPUT
    if not isinstance(small_input, bool):
        raise ConfigError(f"option small_input must be true, false or null, got {small_input!r}")
    return small_input


def _stem_conv(in_channels: int, like: nn.Conv2d, kernel_size: int, stride: int) -> nn.Conv2d:
    """A fresh bias-free conv replacing ``like``, initialised as torchvision initialises its convs."""
    conv = nn.Conv2d(in_channels, like.out_channels, kernel_size, stride=stride,
                     padding=kernel_size // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _finish(model: nn.Module, in_channels: int, image_size: int, name: str,
            track_running_stats: bool) -> nn.Module:
    """Drop BatchNorm running statistics if asked, then set ``feature_dim`` by a probe forward.

    Without running statistics the forward mutates no buffer, which ``torch.func.vmap`` over a batch
    of tasks needs (MAML's transductive BatchNorm, as ``torch.func.replace_all_batch_norm_modules_``).
    """
    if not check_flag(f"{name} option track_running_stats", track_running_stats):
        replace_all_batch_norm_modules_(model)
    model.feature_dim = probe_feature_dim(model, in_channels, image_size, name)
    return model


@register_backbone("resnet18")
def resnet18(*, in_channels: int, image_size: int, small_input: bool | None = None,
             track_running_stats: bool = True) -> nn.Module:
    """torchvision ResNet-18 without its classifier: ``(B, C, H, W) -> (B, 512)``.

    Small inputs get a 3x3 stride-1 stem conv and no stem maxpool (overall stride 8 instead of 32).
    ``track_running_stats=False``: BatchNorm always uses batch statistics (see `_finish`).
    """
    model = torchvision.models.resnet18(weights=None)
    if _is_small(image_size, small_input):
        model.conv1 = _stem_conv(in_channels, model.conv1, kernel_size=3, stride=1)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = _stem_conv(in_channels, model.conv1, kernel_size=7, stride=2)
    model.fc = nn.Identity()
    return _finish(model, in_channels, image_size, "resnet18", track_running_stats)


@register_backbone("mobilenet_v3_small")
def mobilenet_v3_small(*, in_channels: int, image_size: int, small_input: bool | None = None,
                       track_running_stats: bool = True) -> nn.Module:
    """torchvision MobileNetV3-Small without its classifier: ``(B, C, H, W) -> (B, 576)``.

    Small inputs get a stride-1 first conv (overall stride 16 instead of 32).
    ``track_running_stats=False``: BatchNorm always uses batch statistics (see `_finish`).
    """
    model = torchvision.models.mobilenet_v3_small(weights=None)
    stem = model.features[0]
    stride = 1 if _is_small(image_size, small_input) else 2
    stem[0] = _stem_conv(in_channels, stem[0], kernel_size=3, stride=stride)
    model.classifier = nn.Identity()
    return _finish(model, in_channels, image_size, "mobilenet_v3_small", track_running_stats)
