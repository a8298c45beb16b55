"""Support-set augmentation on the device (numpy only): each support image also contributes `n` deterministic
affine variants — small rotations, scalings and shifts, the jitter of training (`pipeline.train.augment`:
± 10°, 1 ± 0.1, ± 0.1 of the size) — so a head adapted on one drawing sees a few plausible others.

Two warps, the same seeded draws: `pil_variants` warps a decoded image AT ITS OWN RESOLUTION with Pillow (bilinear,
the background filling what enters from outside) before the bundle's resize — what `mtl adapt --augment` does with
image files, since warping a 28-pixel Omniglot drawing blurs its 1-pixel strokes; `affine_variants` is
`grid_sample`'s warp (bilinear, align_corners=False, borders repeating the edge) in numpy, for batches that arrive
already normalised. Variants are seeded: the same images, `n` and seed give the same variants.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from mtl.device_runtime.errors import ConfigError

MAX_AUGMENT = 64
DEGREES, SCALE, TRANSLATE = 10.0, 0.1, 0.1


def check_augment(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_AUGMENT:
        raise ConfigError(f"augment must be an integer from 0 to {MAX_AUGMENT} (variants per support image), "
                          f"got {n!r:.40}")
    return n


def _warp(image: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """One image (C, H, W) sampled at theta · (x, y, 1) in normalised output coordinates (bilinear, border)."""
    _, h, w = image.shape
    ys, xs = np.meshgrid((2 * np.arange(h) + 1) / h - 1, (2 * np.arange(w) + 1) / w - 1, indexing="ij")
    gx = theta[0, 0] * xs + theta[0, 1] * ys + theta[0, 2]
    gy = theta[1, 0] * xs + theta[1, 1] * ys + theta[1, 2]
    ix = np.clip(((gx + 1) * w - 1) / 2, 0, w - 1)  # border padding: clamp the sampling point into the image
    iy = np.clip(((gy + 1) * h - 1) / 2, 0, h - 1)
    x0, y0 = np.floor(ix).astype(np.int64), np.floor(iy).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (ix - x0)[None], (iy - y0)[None]
    top = image[:, y0, x0] * (1 - fx) + image[:, y0, x1] * fx
    bottom = image[:, y1, x0] * (1 - fx) + image[:, y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _thetas(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """`n` draws of the jitter as `affine_grid` matrices (2, 3): output → input in normalised coordinates."""
    out = []
    for u in rng.uniform(-1.0, 1.0, size=(n, 4)):
        angle, zoom = math.radians(DEGREES) * u[0], 1.0 + SCALE * u[1]
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        out.append(np.array([[cos, -sin, 2 * TRANSLATE * u[2]], [sin, cos, 2 * TRANSLATE * u[3]]]))
    return out


def affine_variants(images: np.ndarray, n: int, seed: int | np.random.SeedSequence = 0) -> np.ndarray:
    """`n` seeded affine variants of each normalised image (B, C, H, W) → (B·n, C, H, W), image-major."""
    n = check_augment(n)
    rng = np.random.default_rng(seed)
    out = [_warp(image, theta) for image in np.asarray(images, np.float32) for theta in _thetas(rng, n)]
    return np.stack(out) if out else np.zeros((0, *np.shape(images)[1:]), np.float32)


def pil_variants(image: Image.Image, n: int, rng: np.random.Generator) -> list[Image.Image]:
    """`n` affine variants of a decoded image at its own size (the draws of `affine_variants`), the background
    (the median of its border) filling what enters from outside."""
    n = check_augment(n)
    w, h = image.size
    array = np.asarray(image)
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]]).reshape(-1, *array.shape[2:])
    fill = np.median(border, axis=0)
    fill = int(fill) if np.ndim(fill) == 0 else tuple(int(v) for v in fill)
    sx, sy = w / 2, h / 2
    out = []
    for t in _thetas(rng, n):  # affine_grid's matrix in Pillow's pixel coordinates (it samples at x + 0.5, y + 0.5)
        a, b = t[0, 0], t[0, 1] * sx / sy
        d, e = t[1, 0] * sy / sx, t[1, 1]
        c = sx * (t[0, 0] * (0.5 / sx - 1) + t[0, 1] * (0.5 / sy - 1) + t[0, 2] + 1) - 0.5 * (a + b)
        f = sy * (t[1, 0] * (0.5 / sx - 1) + t[1, 1] * (0.5 / sy - 1) + t[1, 2] + 1) - 0.5 * (d + e)
        out.append(image.transform((w, h), Image.Transform.AFFINE, (a, b, c, d, e, f),
                                   resample=Image.Resampling.BILINEAR, fillcolor=fill))
    return out
