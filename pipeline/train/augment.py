"""Batched, on-device image augmentation (no per-image Python work)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, generator: torch.Generator, *, degrees: float = 10.0,
                  scale: float = 0.1, translate: float = 0.1, hflip: bool = False) -> torch.Tensor:
    """Random rotation / scale / translation (and optional horizontal flip) of a float batch (B, C, H, W).

    One `affine_grid` + `grid_sample` for the whole batch; borders repeat the edge (background).
    """
    b, dev = x.shape[0], x.device
    u = torch.rand(b, 5, generator=generator, device=dev) * 2 - 1  # uniform in [-1, 1]
    angle = u[:, 0] * math.radians(degrees)
    zoom = 1.0 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    flip = torch.where(u[:, 4] < 0, -1.0, 1.0) if hflip else torch.ones(b, device=dev)
    theta = torch.stack([torch.stack([cos * flip, -sin, u[:, 2] * translate * 2], dim=1),
                         torch.stack([sin * flip, cos, u[:, 3] * translate * 2], dim=1)], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
