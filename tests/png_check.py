"""Check that a figure file is a real, drawn PNG (Pillow only, so the device tests can use it too)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def assert_drawn_png(path: Path, min_size: tuple[int, int] = (100, 100)) -> Image.Image:
    """A PNG that opens, is at least `min_size`, and is not blank: many pixels differ from the background."""
    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as image:
        assert image.format == "PNG", image.format
        image.load()
        rgb = image.convert("RGB")
    assert rgb.width >= min_size[0] and rgb.height >= min_size[1], rgb.size
    colours = rgb.getcolors(maxcolors=1 << 24)
    background = max(colours)[0]
    assert rgb.width * rgb.height - background > 0.01 * rgb.width * rgb.height, "the image is (nearly) blank"
    assert len(colours) > 2, "one or two colours only: nothing was drawn"
    return rgb
