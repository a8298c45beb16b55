"""`mtl predict --show`: a contact sheet of the classified images, each with its predicted label and confidence.

Drawn with Pillow only (ImageDraw and its default font), because it runs on the device, where neither
matplotlib nor torch is installed. The images are shown as they are on disk (not as the model's
resized input), on a grid of fixed-size cells; the sheet is written atomically as one PNG.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mtl.device_runtime.atomic import atomic_write_bytes
from mtl.device_runtime.errors import DataError
from mtl.device_runtime.files import read_regular
from mtl.device_runtime.preprocess import MAX_IMAGE_BYTES

THUMB = 128  # pixels: the longer side of each image on the sheet
PAD = 8
MAX_COLUMNS = 8
BACKGROUND, INK, FAINT = (255, 255, 255), (0, 0, 0), (90, 90, 90)


def contact_sheet(images: Sequence[str | Path], labels: Sequence[str], confidences: Sequence[float]) -> Image.Image:
    """A grid of the images (RGB), captioned "label" and "confidence%  file name" under each."""
    if not (len(images) == len(labels) == len(confidences)) or not images:
        raise DataError(f"a contact sheet needs one label and confidence per image, got {len(images)} images, "
                        f"{len(labels)} labels, {len(confidences)} confidences")
    font = ImageFont.load_default()
    line = _line_height(font)
    columns = min(MAX_COLUMNS, math.ceil(math.sqrt(len(images))))
    cell_w, cell_h = THUMB + 2 * PAD, THUMB + 2 * PAD + 2 * line
    rows = math.ceil(len(images) / columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, (path, label, confidence) in enumerate(zip(images, labels, confidences, strict=True)):
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        thumb = _thumbnail(path)
        sheet.paste(thumb, (x + PAD + (THUMB - thumb.width) // 2, y + PAD + (THUMB - thumb.height) // 2))
        top = y + PAD + THUMB + 2
        draw.text((x + PAD, top), _fit(draw, label, font), fill=INK, font=font)
        detail = _fit(draw, f"{100 * confidence:.1f}%  {Path(path).name}", font)
        draw.text((x + PAD, top + line), detail, fill=FAINT, font=font)
    return sheet


def save_contact_sheet(path: str | Path, images: Sequence[str | Path], labels: Sequence[str],
                       confidences: Sequence[float]) -> None:
    """Draw the sheet and replace `path` with it as a PNG, atomically."""
    buffer = io.BytesIO()
    contact_sheet(images, labels, confidences).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def _thumbnail(path: str | Path) -> Image.Image:
    """The image as RGB within THUMB × THUMB (aspect kept). Small images are enlarged (nearest neighbour, so
    a 28-pixel glyph stays crisp). `predict` has read every image already, so a failure here is rare."""
    data = read_regular(path, MAX_IMAGE_BYTES, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"cannot draw image {path} on the contact sheet: {exc.__class__.__name__}") from None
    scale = THUMB / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    return rgb.resize(size, resample)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """`text` shortened with "..." to the cell's width (and to Latin-1 for Pillow's bitmap fallback font,
    used where Pillow lacks FreeType, which cannot encode other characters)."""
    if not isinstance(font, ImageFont.FreeTypeFont):
        text = text.encode("latin-1", "replace").decode("latin-1")
    if draw.textlength(text, font=font) <= THUMB:
        return text
    while text and draw.textlength(text + "...", font=font) > THUMB:
        text = text[:-1]
    return text + "..."


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    left, top, right, bottom = font.getbbox("Ag%")
    return int(bottom - min(top, 0)) + 4
