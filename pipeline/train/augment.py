"""Batched, on-device image augmentation (no per-image Python work)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ELASTIC_GRID = 4  # control points per side of the elastic displacement field


def random_affine(x: torch.Tensor, generator: torch.Generator, *, degrees: float = 10.0,
                  scale: float = 0.1, translate: float = 0.1, shear: float = 0.0, hflip: bool = False,
                  elastic: float = 0.0) -> torch.Tensor:
    """Random rotation (±`degrees`), scale (1 ± `scale`, per axis when `shear` is on), translation (± `translate`
    of the size), shear (± `shear`, as in Koch et al. 2015's affine distortions) and optional horizontal flip of
    a float batch (B, C, H, W); with `elastic`, also a smooth random displacement (Simard et al. 2003's elastic
    distortion of handwriting): each of a 4×4 grid of control points moves by up to ± `elastic` of the size, and
    bicubic upsampling spreads that over the image. One `affine_grid` + `grid_sample` for the whole batch; borders
    repeat the edge (background)."""
    b, dev = x.shape[0], x.device
    u = torch.rand(b, 5, generator=generator, device=dev) * 2 - 1  # uniform in [-1, 1]
    if shear:  # drawn only then: without shear the random stream (and a seeded run) is what it always was
        u = torch.cat([u, torch.rand(b, 2, generator=generator, device=dev) * 2 - 1], dim=1)
    angle = u[:, 0] * math.radians(degrees)
    zoom_x = 1.0 + u[:, 1] * scale
    zoom_y = zoom_x if not shear else 1.0 + u[:, 5] * scale
    cos, sin = torch.cos(angle), torch.sin(angle)
    flip = torch.where(u[:, 4] < 0, -1.0, 1.0) if hflip else torch.ones(b, device=dev)
    k = u[:, 6] * shear if shear else torch.zeros(b, device=dev)  # x += k·y
    # the grid's sampling matrix: rotation · shear · 1/zoom (affine_grid maps output to input coordinates)
    a11, a12 = cos / zoom_x, (cos * k - sin) / zoom_y
    a21, a22 = sin / zoom_x, (sin * k + cos) / zoom_y
    theta = torch.stack([torch.stack([a11 * flip, a12, u[:, 2] * translate * 2], dim=1),
                         torch.stack([a21 * flip, a22, u[:, 3] * translate * 2], dim=1)], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if elastic:  # drawn only then, after the affine draws: the stream without it is unchanged
        control = torch.rand(b, 2, ELASTIC_GRID, ELASTIC_GRID, generator=generator, device=dev) * 2 - 1
        field = F.interpolate(control * (2 * elastic), size=tuple(x.shape[-2:]), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1).to(x.dtype)  # grid units: the image spans 2
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
