"""Shared fixtures for the data tests: the real Omniglot subset (when present) and tiny image writers."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[3]
OMNIGLOT_DIR = REPO_ROOT.parent / "shared" / "data" / "omniglot"


@pytest.fixture
def omniglot_dir() -> Path:
    """The shared real Omniglot archives (`../shared/data/omniglot`); skips when they are absent."""
    if not any(OMNIGLOT_DIR.glob("images_*.zip")):
        pytest.skip(f"real Omniglot data not found at {OMNIGLOT_DIR}")
    return OMNIGLOT_DIR


def glyph(seed: int, size: int = 32) -> Image.Image:
    """A black-on-white 1-bit drawing (like an Omniglot PNG), different for every seed."""
    rng = np.random.default_rng(seed)
    pixels = np.full((size, size), 255, np.uint8)
    top, left = rng.integers(2, size // 2, size=2)
    pixels[top:top + size // 3, left:left + 3] = 0
    return Image.fromarray(pixels).convert("1")


def photo(seed: int, size: int = 40) -> Image.Image:
    """A random RGB image."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def write_images(folder: Path, count: int, seed: int = 0, suffix: str = ".png", make=photo) -> list[Path]:
    """`count` images named 00.png, 01.png, ... in `folder` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:02d}{suffix}" for i in range(count)]
    for i, path in enumerate(paths):
        image = make(seed * 1000 + i)
        (image.convert("RGB") if suffix in (".jpg", ".jpeg") else image).save(path)
    return paths
