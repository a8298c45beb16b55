"""Data-source spec strings → `ClassImages`: `"omniglot:PATH"`, `"folder:PATH"`, `"synthetic:200"`, ...

`data_scheme` only parses (the CLI calls it to fail fast on a typo); `load_data` reads the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from mtl.pipeline.data.cifar import load_cifar_fs, load_fc100
from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.data.folder import load_folder
from mtl.pipeline.data.mini_imagenet import load_mini_imagenet
from mtl.pipeline.data.omniglot import load_omniglot
from mtl.pipeline.data.synthetic import SYNTHETIC_CLASSES, load_synthetic
from mtl.pipeline.errors import ConfigError

Loader = Callable[..., ClassImages]
# scheme → (how to write it, the loader of a PATH: `loader(path, image_size=, download=)`); the order is the
# order error messages list them in. `synthetic` takes a class count, not a path. A new source is one row here.
SOURCES: dict[str, tuple[str, Loader | None]] = {
    "omniglot": ("omniglot:PATH", load_omniglot),
    "folder": ("folder:PATH", load_folder),
    "synthetic": ("synthetic[:N_CLASSES]", None),
    "cifar-fs": ("cifar-fs:PATH", load_cifar_fs),
    "fc100": ("fc100:PATH", load_fc100),
    "mini-imagenet": ("mini-imagenet:PATH", load_mini_imagenet),
}
SCHEMES: dict[str, str] = {scheme: usage for scheme, (usage, _) in SOURCES.items()}

def parse_data_spec(spec: str) -> tuple[str, str]:
    """`"scheme:argument"` → (scheme, argument); `ConfigError` for an unknown scheme or a missing path."""
    choices = ", ".join(SCHEMES.values())
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"no data source given; use one of {choices}")
    scheme, _, argument = spec.strip().partition(":")
    scheme = scheme.strip().lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown data source {spec!r}; use one of {choices}")
    if scheme == "synthetic":
        synthetic_classes(argument)
    elif not argument.strip():
        raise ConfigError(f"data source {spec!r} needs a path: {SCHEMES[scheme]}")
    return scheme, argument.strip()


def data_scheme(spec: str) -> str:
    """The scheme of a data-source spec, validating it without touching the disk."""
    return parse_data_spec(spec)[0]


def synthetic_classes(argument: str) -> int:
    """The N of `synthetic:N` (200 when absent); `ConfigError` unless an integer ≥ 2."""
    if not argument.strip():
        return SYNTHETIC_CLASSES
    try:
        n_classes = int(argument)
    except ValueError:
        raise ConfigError(f"synthetic:N needs a whole number of classes, got {argument!r}") from None
    if n_classes < 2:
        raise ConfigError(f"synthetic:N needs at least 2 classes, got {n_classes}")
    return n_classes


def load_data(spec: str, *, image_size: int | None = None, download: bool = False) -> ClassImages:
    """Load a data source into `ClassImages`; `image_size` None means the source's own default.

    Defaults: omniglot and synthetic 28 px grey (strokes bright), folder and mini-imagenet 84 px RGB,
    cifar-fs / fc100 32 px RGB. `download` fetches Omniglot or CIFAR-100 into PATH when missing.
    Raises `ConfigError` for a malformed spec, `DataError` for missing or unreadable data.
    """
    scheme, argument = parse_data_spec(spec)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)):
        raise ConfigError(f"image size must be a whole number of pixels, got {image_size!r}")
    if scheme == "synthetic":
        data = load_synthetic(synthetic_classes(argument), image_size=image_size)
    else:
        data = SOURCES[scheme][1](Path(argument).expanduser(), image_size=image_size, download=download)
    return dataclasses.replace(data, provenance={"spec": spec, **data.provenance})

