"""Scaling and shifting (SS) of a frozen, pretrained feature extractor.

Sun, Liu, Chua & Schiele, "Meta-Transfer Learning for Few-Shot Learning" (CVPR 2019), §4.2: the
pretrained extractor Θ stays frozen; each convolution (W, b) gets a learned per-output-channel scale
Φ_S1 (initialised to 1) and shift Φ_S2 (initialised to 0) and computes ``(W ⊙ Φ_S1) * X + (b + Φ_S2)``.
At initialisation the wrapped network is the pretrained one exactly; meta-training then learns only
2·C_out numbers per conv layer. For export, `fold_scale_shift` multiplies them back into plain convs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mtl.pipeline.errors import ConfigError


class ScaleShiftConv2d(nn.Module):
    """A frozen ``nn.Conv2d`` modulated by learned per-channel ``scale`` (C_out,) and ``shift`` (C_out,).

    ``(B, C_in, H, W) -> (B, C_out, H', W')`` exactly as ``conv`` does, but with weight
    ``conv.weight * scale[:, None, None, None]`` and bias ``conv.bias + shift`` (``shift`` alone when
    the conv has no bias). The forward reads every tensor through module attributes, so
    ``torch.func.functional_call`` with a params dict (``"conv.weight"``, ``"scale"``, ``"shift"``)
    and ``grad`` / ``vmap`` over it work. The original weights stay under ``conv.weight`` /
    ``conv.bias`` in the state dict.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ConfigError(f"scaling and shifting supports zero-padded convs only, got padding_mode "
                              f"{conv.padding_mode!r} in {conv}")
        self.conv = conv
        for param in conv.parameters():
            param.requires_grad_(False)
        like = conv.weight
        self.scale = nn.Parameter(torch.ones(conv.out_channels, device=like.device, dtype=like.dtype))
        self.shift = nn.Parameter(torch.zeros(conv.out_channels, device=like.device, dtype=like.dtype))

    def modulated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The effective weight ``W ⊙ scale`` (C_out, C_in/groups, kh, kw) and bias ``b + shift`` (C_out,)."""
        weight = self.conv.weight * self.scale[:, None, None, None]
        bias = self.shift if self.conv.bias is None else self.conv.bias + self.shift
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H', W')``."""
        weight, bias = self.modulated()
        conv = self.conv
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def extra_repr(self) -> str:
        return f"channels={self.conv.out_channels}"


def _convs_to_wrap(module: nn.Module) -> list[str]:
    """Names of the ``nn.Conv2d`` modules under ``module`` not already inside a `ScaleShiftConv2d`."""
    inside = {f"{name}.conv" if name else "conv" for name, m in module.named_modules()
              if isinstance(m, ScaleShiftConv2d)}
    return [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d) and name not in inside]


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` (dotted path) of ``root`` is."""
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name), child, new)


def scale_shift_names(module: nn.Module) -> list[str]:
    """Names of every scale / shift parameter of the `ScaleShiftConv2d` layers under ``module``."""
    return [f"{name}.{p}" if name else p for name, m in module.named_modules()
            if isinstance(m, ScaleShiftConv2d) for p in ("scale", "shift")]


def add_scale_shift(backbone: nn.Module) -> list[str]:
    """Wrap every ``nn.Conv2d`` of ``backbone`` in place in a `ScaleShiftConv2d` and freeze the rest.

    Afterwards only the scale / shift parameters require grad (Sun et al. 2019: Θ is frozen, BatchNorm
    affine parameters included). Returns their names relative to ``backbone``, e.g.
    ``["blocks.0.0.scale", "blocks.0.0.shift", ...]``. Calling it again wraps nothing new and returns
    the same names. Load pretrained weights *before* wrapping: the conv weights move to ``...conv.weight``.
    A backbone without convolutions (e.g. ``mlp``) raises `ConfigError`.
    """
    names = _convs_to_wrap(backbone)
    if "" in names:
        raise ConfigError("add_scale_shift wraps the convs inside a backbone; got a bare nn.Conv2d")
    if not names and not scale_shift_names(backbone):
        raise ConfigError(f"{type(backbone).__name__} has no nn.Conv2d layers to scale and shift")
    for param in backbone.parameters():
        param.requires_grad_(False)
    for name in names:
        _replace(backbone, name, ScaleShiftConv2d(backbone.get_submodule(name)))
    learned = scale_shift_names(backbone)
    for name in learned:
        backbone.get_parameter(name).requires_grad_(True)
    return learned


@torch.no_grad()
def _folded(layer: ScaleShiftConv2d) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` with weight ``W ⊙ scale`` and bias ``b + shift`` (always with a bias)."""
    weight, bias = layer.modulated()
    old = layer.conv
    conv = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                     padding=old.padding, dilation=old.dilation, groups=old.groups, bias=True,
                     device=weight.device, dtype=weight.dtype)
    conv.weight.copy_(weight)
    conv.bias.copy_(bias)
    conv.requires_grad_(old.weight.requires_grad)
    return conv


def fold_scale_shift(backbone: nn.Module) -> nn.Module:
    """A deep copy of ``backbone`` with each `ScaleShiftConv2d` replaced by its folded ``nn.Conv2d``.

    The copy computes the same function (up to float rounding) with plain convs only, which is what an
    exporter wants; ``backbone`` itself is left untouched. Without scale/shift layers it is a plain copy.
    """
    folded = copy.deepcopy(backbone)
    layers = [name for name, m in folded.named_modules() if isinstance(m, ScaleShiftConv2d)]
    if "" in layers:
        return _folded(folded)
    for name in layers:
        _replace(folded, name, _folded(folded.get_submodule(name)))
    return folded
