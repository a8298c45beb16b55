"""Adversarial samples for robust meta-learning (ADML) and for evaluating robustness (`mtl evaluate
--attack-epsilon`): the fast gradient sign method, functional so that it runs per task under vmap."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import grad


def fgsm(logits_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
         epsilon: float) -> torch.Tensor:
    """FGSM (Goodfellow et al. 2015): x + ε·sign(∇ₓ cross-entropy(logits_of(x), y)) — one step of size ε in the
    input's own units, held constant by any gradient taken later. torch.func.grad computes it under vmap and
    inside `torch.no_grad` (an evaluation) alike."""
    g = grad(lambda inp: F.cross_entropy(logits_of(inp), y))(x)
    return (x + epsilon * torch.sign(g)).detach()
