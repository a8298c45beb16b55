"""Image decoding, resizing and normalisation with Pillow and numpy only (no torch).

The one definition of the input transform: training decodes every image with `load_image` /
`convert_image` (re-exported by `pipeline.data.images`) and normalises it on its device with
`(x / 255 - mean) / std`; a device repeats both from the `InputSpec` in a bundle's manifest.
"""

from __future__ import annotations

import io
import struct
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtl.device_runtime.errors import ConfigError, DataError
from mtl.device_runtime.files import read_regular

# Pillow warns (UserWarning) about damaged metadata, e.g. "Corrupt EXIF data", and then either decodes the
# pixels or raises; a warning would add a second line to the one-line error (or noise to a success).
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")

RESIZE_METHODS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                  "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
                  "box": Image.Resampling.BOX}
# Modes with 16/32-bit or float samples: Pillow's conversion to L/RGB clips them to 255 (a white image), so
# they are refused, not silently converted. Every 8-bit mode (1, L, P, RGB, RGBA, LA, CMYK, ...) is converted.
WIDE_MODES = ("I", "F")
# What one image may be: a 50-megapixel photo is ~30 MB as JPEG; below Pillow's own decompression-bomb warning
# (89 M pixels), so a big image is one clean error, never a warning line on stderr.
MAX_IMAGE_BYTES = 64 << 20
MAX_IMAGE_PIXELS = 64_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

ImageSource = str | Path | bytes | Image.Image | np.ndarray


@dataclass(frozen=True)
class InputSpec:
    """How raw images become model inputs: decode → mode → resize → (invert) → uint8 (C, H, W).

    Normalisation `(x / 255 - mean) / std` happens later, per channel (`normalize`).
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
    """A decoded Pillow image → uint8 array (C, H, W) following `spec`: any 8-bit mode is converted to
    L or RGB and any size resized; 16/32-bit and float images raise `ValueError` naming their mode."""
    if image.mode.startswith(WIDE_MODES):
        raise ValueError(f"mode {image.mode} has 16/32-bit or float samples, which would be clipped; "
                         "save it as an 8-bit image (L or RGB)")
    if min(image.size) < 1:
        raise ValueError(f"image is empty ({image.size[0]}x{image.size[1]} pixels)")
    mode = "L" if spec.channels == 1 else "RGB"
    if image.mode != mode:  # convert() to the same mode would only copy the pixels
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
    """Decode a file path or raw bytes → uint8 (C, H, W); unreadable input raises `DataError`.

    A path is read only if it is a regular file of at most `MAX_IMAGE_BYTES` (never a FIFO or a device), and
    an image of more than `MAX_IMAGE_PIXELS` pixels is refused from its header, before it is decoded."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    with decode_image(source, label) as image:
        try:
            return convert_image(image, spec)
        except ValueError as exc:
            raise DataError(f"cannot read image {label}: {exc.__class__.__name__}: {_one_line(exc)}") from None


def decode_image(source: str | Path | bytes, label: str) -> Image.Image:
    """A file path or raw bytes → the decoded Pillow image at its own size (with the checks of `load_image`)."""
    data = source if isinstance(source, bytes) else read_regular(source, MAX_IMAGE_BYTES, "image")
    try:
        with warnings.catch_warnings():  # Pillow warns of a possible decompression bomb on open: an error here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            image.close()
            raise DataError(f"cannot read image {label}: {image.width}x{image.height} pixels is more than the "
                            f"{MAX_IMAGE_PIXELS:,} an image may have")
        image.load()
        return image
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
            SyntaxError, ValueError, EOFError, struct.error) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read image {label}: {exc.__class__.__name__}: {_one_line(exc)}") from None


def as_pil(source: ImageSource, name: str) -> Image.Image:
    """Any supported source → a decoded Pillow image at its own size (what `to_uint8` resizes)."""
    if isinstance(source, str | Path | bytes):
        return decode_image(source, name if isinstance(source, bytes) else str(source))
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise DataError(f"cannot read image {name}: expected a uint8 (H, W) or (H, W, C) array, got "
                            f"{source.dtype} {source.shape}")
        return Image.fromarray(source)
    if not isinstance(source, Image.Image):
        raise DataError(f"cannot read image {name}: unsupported image type {type(source).__name__}")
    return source


def normalize(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 (..., C, H, W) → float32 `(x / 255 - mean) / std` per channel, in float32 like training."""
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
    with np.errstate(over="ignore", invalid="ignore"):  # a degenerate std is reported by the caller, by image
        return (images.astype(np.float32) / np.float32(255.0) - mean) / std


def to_uint8(source: ImageSource, spec: InputSpec, name: str) -> np.ndarray:
    """Any supported source → uint8 (C, H, W): a path or encoded bytes are decoded, a Pillow image is
    converted, and a numpy array is read as Pillow's layout, uint8 (H, W) or (H, W, C)."""
    if isinstance(source, str | Path | bytes):
        return load_image(source, spec, name=None if isinstance(source, str | Path) else name)
    try:
        if isinstance(source, np.ndarray):
            if source.dtype != np.uint8 or source.ndim not in (2, 3):
                raise ValueError(f"expected a uint8 (H, W) or (H, W, C) array, got {source.dtype} {source.shape}")
            source = Image.fromarray(source)
        if not isinstance(source, Image.Image):
            raise ValueError(f"unsupported image type {type(source).__name__}")
        return convert_image(source, spec)
    except (Image.DecompressionBombError, OSError, TypeError, ValueError) as exc:
        raise DataError(f"cannot read image {name}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (a decoder may report several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def preprocess(sources: Sequence[ImageSource], spec: InputSpec) -> np.ndarray:
    """Images → the normalised float32 batch (B, C, H, W) the model saw in training."""
    if isinstance(sources, str | Path | bytes | Image.Image):
        sources = [sources]  # one image passed on its own; an array is a batch along its first axis
    if len(sources) == 0:
        return np.zeros((0, spec.channels, spec.size, spec.size), dtype=np.float32)
    batch = np.stack([to_uint8(s, spec, f"#{i}") for i, s in enumerate(sources)])  # (B, C, H, W) uint8
    return normalize(batch, spec)


def image_folders(root: str | Path) -> dict[str, list[Path]]:
    """A support directory → {class name: its image files}, one sub-folder per class, both sorted by name.

    Hidden entries are skipped; an empty class folder, a directory without class folders, a class name with a
    control character (a newline would split every line that names it), or two class names that another file
    system (or a reader) would take for the same one raise `DataError`. An image name that is not a regular file
    (a FIFO, a device) is kept, so that reading it names it rather than skipping it in silence.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"support directory {root} does not exist or is not a directory")
    classes = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not folder.name.isprintable():
            raise DataError(f"class folder {folder.name!r} in {root} has a control character in its name; rename it")
        images = sorted(p for p in folder.iterdir()
                        if not p.is_dir() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
        same = next((name for name in classes if _fold(name) == _fold(folder.name)), None)
        if same is not None:
            raise DataError(f"class folders {same!r} and {folder.name!r} in {root} differ only in case or "
                            "Unicode form; class names must be unique")
        classes[folder.name] = images
    if not classes:
        raise DataError(f"support directory {root} has no class sub-folders; put each class's images in "
                        f"{root}/<class name>/")
    return classes


def _fold(name: str) -> str:
    """A class name as a case-insensitive file system (or a person) would compare it."""
    return unicodedata.normalize("NFC", name).casefold().strip()
