"""Image decoding and resizing with Pillow and numpy only (no torch).

Every loader goes through `load_image`, so the device runtime can reproduce the training
preprocessing exactly from an `InputSpec` stored in a bundle's manifest.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import ConfigError, DataError

RESIZE_METHODS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                  "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
                  "box": Image.Resampling.BOX}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class InputSpec:
    """How raw images become model inputs: decode → mode → resize → (invert) → uint8 (C, H, W).

    Normalisation `(x / 255 - mean) / std` happens later, on the training device, per channel.
    """

    size: int = 28
    channels: int = 1
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    invert: bool = False
    resize: str = "bilinear"

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ConfigError(f"image size must be at least 8 pixels, got {self.size}")
        if self.channels not in (1, 3):
            raise ConfigError(f"image channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError(f"mean/std need {self.channels} value(s), got {self.mean} / {self.std}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std must be positive, got {self.std}")
        if self.resize not in RESIZE_METHODS:
            raise ConfigError(f"unknown resize method {self.resize!r}; choose from {sorted(RESIZE_METHODS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        return cls(size=int(data["size"]), channels=int(data["channels"]), mean=tuple(data["mean"]),
                   std=tuple(data["std"]), invert=bool(data["invert"]), resize=str(data["resize"]))


def convert_image(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """A decoded Pillow image → uint8 array (C, H, W) following `spec`."""
    mode = "L" if spec.channels == 1 else "RGB"
    image = image.convert(mode)
    if image.size != (spec.size, spec.size):
        image = image.resize((spec.size, spec.size), RESIZE_METHODS[spec.resize])
    array = np.asarray(image, dtype=np.uint8)
    if spec.invert:
        array = 255 - array
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def load_image(source: str | Path | bytes, spec: InputSpec, name: str | None = None) -> np.ndarray:
    """Decode a file path or raw bytes → uint8 (C, H, W); unreadable input raises `DataError`."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
        with handle, Image.open(handle) as image:
            image.load()
            return convert_image(image, spec)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {label}: {exc.__class__.__name__}: {exc}") from None
