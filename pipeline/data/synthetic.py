"""`synthetic[:N_CLASSES]` — seeded, offline, Omniglot-like glyph classes for tests and smoke runs.

Each class is a random stroke program: 2–4 Bezier strokes through random control points in the unit
square. Each sample re-draws the program with jittered control points, a random affine warp
(rotation, scale, shear, translation), a jittered pen width and a little pixel noise — rendered black
on white at 4x resolution with PIL, then reduced by `convert_image` with the Omniglot spec (inverted,
so strokes are bright). Classes come in families of ~20 that share a style (stroke count and
curve degree), which are the superclasses used for disjoint splits. The output depends only on
(N_CLASSES, samples per class, seed), never on the machine or the call.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.data.images import InputSpec, convert_image
from mtl.pipeline.errors import ConfigError

SYNTHETIC_CLASSES = 200
SYNTHETIC_SAMPLES = 20
SYNTHETIC_SEED = 20_150_311
SYNTHETIC_SIZE = 28
FAMILY_SIZE = 20
SUPERSAMPLE = 4
# Family styles: (strokes, control points per stroke). 2 points = straight line, 3 = quadratic, 4+ = cubic+.
STYLES = ((2, 2), (3, 2), (4, 2), (2, 3), (3, 3), (4, 3), (2, 4), (3, 4), (4, 4), (2, 5))
PEN_WIDTHS = (0.06, 0.085, 0.045)  # fraction of the canvas; families beyond len(STYLES) change pen
_CURVE_POINTS = 24


def synthetic_spec(image_size: int | None) -> InputSpec:
    """Same preprocessing as Omniglot (grey, inverted) so a model moves between the two unchanged."""
    return InputSpec(size=image_size or SYNTHETIC_SIZE, channels=1, invert=True)


def num_families(n_classes: int) -> int:
    """~20 classes per family, at least 3 (so a 3-way split by family exists), at most one per class."""
    return min(n_classes, max(3, round(n_classes / FAMILY_SIZE)))


def load_synthetic(n_classes: int = SYNTHETIC_CLASSES, *, image_size: int | None = None,
                   samples_per_class: int = SYNTHETIC_SAMPLES, seed: int = SYNTHETIC_SEED) -> ClassImages:
    """`n_classes` glyph classes of `samples_per_class` images each → `ClassImages` (C=1, H=W=size)."""
    if n_classes < 2:
        raise ConfigError(f"synthetic data needs at least 2 classes, got {n_classes}")
    if samples_per_class < 1:
        raise ConfigError(f"synthetic data needs at least 1 sample per class, got {samples_per_class}")
    spec = synthetic_spec(image_size)
    families = num_families(n_classes)
    stacks, names, supers = [], [], []
    for c in range(n_classes):
        family = c % families
        rng = np.random.default_rng([seed, c])
        program = glyph_program(rng, family)
        width = PEN_WIDTHS[(family // len(STYLES)) % len(PEN_WIDTHS)]
        stacks.append(np.stack([render_glyph(program, rng, spec, width) for _ in range(samples_per_class)]))
        names.append(f"synthetic/{c:04d}")
        supers.append(f"family{family:02d}")
    provenance = {"scheme": "synthetic", "classes": n_classes, "samples_per_class": samples_per_class,
                  "seed": seed, "families": families}
    return ClassImages.from_arrays(stacks, names, supers, spec, provenance)


def glyph_program(rng: np.random.Generator, family: int) -> list[np.ndarray]:
    """A class's strokes: list of (P, 2) control points in [0.15, 0.85]², P fixed by the family style.

    Half the strokes after the first start where the previous one ended, as pen strokes often do.
    """
    n_strokes, n_points = STYLES[family % len(STYLES)]
    strokes: list[np.ndarray] = []
    for s in range(n_strokes):
        points = rng.uniform(0.15, 0.85, size=(n_points, 2))
        if s > 0 and rng.random() < 0.5:
            points[0] = strokes[-1][-1]
        strokes.append(points)
    return _fit_box(strokes)


def _fit_box(strokes: list[np.ndarray], low: float = 0.15, high: float = 0.85) -> list[np.ndarray]:
    """Scale and centre a glyph so its longer side spans [low, high], as handwritten characters fill a frame."""
    points = np.concatenate(strokes)
    corner, extent = points.min(0), points.max(0) - points.min(0)
    scale = (high - low) / max(float(extent.max()), 1e-6)
    offset = 0.5 - extent * scale / 2
    return [(s - corner) * scale + offset for s in strokes]


def render_glyph(strokes: list[np.ndarray], rng: np.random.Generator, spec: InputSpec,
                 pen: float) -> np.ndarray:
    """One jittered drawing of a stroke program → uint8 (1, size, size), strokes bright after `spec`."""
    canvas = spec.size * SUPERSAMPLE
    warp, shift = _random_affine(rng)
    width = max(1, round(canvas * pen * rng.uniform(0.75, 1.3)))
    image = Image.new("L", (canvas, canvas), 255)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        points = stroke + rng.normal(0.0, 0.02, size=stroke.shape)  # (P, 2)
        curve = (_bezier(points) - 0.5) @ warp.T + 0.5 + shift  # (_CURVE_POINTS, 2)
        xy = [tuple(p) for p in (curve * canvas).tolist()]
        draw.line(xy, fill=0, width=width, joint="curve")
        for x, y in (xy[0], xy[-1]):  # round pen caps
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=0)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 10.0, size=(canvas, canvas))
    return convert_image(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), spec)


def _random_affine(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small random warp about the centre: (2, 2) matrix and (2,) shift in canvas units."""
    angle = math.radians(rng.uniform(-12.0, 12.0))
    scale = rng.uniform(0.88, 1.12, size=2)
    shear = rng.uniform(-0.15, 0.15)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(scale), rng.uniform(-0.06, 0.06, size=2)


def _bezier(points: np.ndarray) -> np.ndarray:
    """Bezier curve through control points (P, 2) sampled at `_CURVE_POINTS` → (_CURVE_POINTS, 2)."""
    degree = len(points) - 1
    t = np.linspace(0.0, 1.0, _CURVE_POINTS)[:, None]
    k = np.arange(degree + 1)[None, :]
    coefficients = np.array([math.comb(degree, i) for i in range(degree + 1)])[None, :]
    return (coefficients * t**k * (1 - t) ** (degree - k)) @ points
