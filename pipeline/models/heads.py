"""Classification heads on top of backbone features: linear, and cosine with a learned temperature.

The cosine head follows Gidaris & Komodakis, "Dynamic Few-Shot Visual Learning without Forgetting"
(CVPR 2018) and Chen et al., "A Closer Look at Few-Shot Classification" (ICLR 2019): logits are a
learned scale times the cosine similarity between features and class weight vectors.

Both heads keep their class weights as one ``(N, D)`` parameter and compute with ``torch.nn.functional``
only, so the same parameters can be passed to ``torch.func.functional_call`` and adapted in an inner
loop, and N can be anything.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models.registry import check_positive

COSINE_INIT_SCALE = 10.0


class LinearHead(nn.Module):
    """``logits = features @ weight.T + bias``: ``(B, D) -> (B, N)``; weight ``(N, D)``, bias ``(N,)``.

    Initialised as ``nn.Linear`` is (uniform in +-1/sqrt(D)).
    """

    def __init__(self, feature_dim: int, n_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, feature_dim))
        self.bias = nn.Parameter(torch.empty(n_classes))
        bound = 1.0 / math.sqrt(feature_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``(B, D)`` -> logits ``(B, N)``."""
        return F.linear(features, self.weight, self.bias)


class CosineHead(nn.Module):
    """``logits = exp(log_scale) * cos(features, weight)``: ``(B, D) -> (B, N)``, so ``|logits| <= scale``.

    weight ``(N, D)``; ``log_scale`` is a learned scalar, initialised so the scale is 10. Learning
    the log keeps the scale positive without a clamp.
    """

    def __init__(self, feature_dim: int, n_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, feature_dim))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(feature_dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(COSINE_INIT_SCALE)))

    @property
    def scale(self) -> torch.Tensor:
        """The temperature ``exp(log_scale)``, a scalar tensor."""
        return self.log_scale.exp()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``(B, D)`` -> logits ``(B, N)``."""
        cosine = F.linear(F.normalize(features, dim=-1), F.normalize(self.weight, dim=-1))  # (B, N)
        return self.log_scale.exp() * cosine


HEADS: dict[str, type[nn.Module]] = {"linear": LinearHead, "cosine": CosineHead}


def build_head(kind: str, *, feature_dim: int, n_classes: int) -> nn.Module:
    """A head of ``kind`` ("linear" or "cosine") mapping ``(B, feature_dim)`` to ``(B, n_classes)``."""
    if kind not in HEADS:
        raise ConfigError(f"unknown head {kind!r}; valid heads: {', '.join(sorted(HEADS))}")
    check_positive("feature_dim", feature_dim)
    check_positive("n_classes", n_classes)
    return HEADS[kind](feature_dim, n_classes)
