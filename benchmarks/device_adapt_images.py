"""The images `benchmarks/device_adapt.py` feeds both sides, and the int8 calibration images.

Two kinds (a workload's `images`):

- `omniglot`: real Omniglot drawings, the files a Conv-4 28×28 model meets in the field — 105×105
  1-bit PNGs, copied byte for byte from `../shared/data/omniglot/*.zip` into the benchmark's temporary
  folder (never into the project). Classes are characters drawn with a fixed seed; drawings 0…K−1 of
  each are the support set, later drawings the queries. int8 calibration uses drawings of other
  characters, as an export calibrates on training classes.
- `synthetic`: a smooth random 8 × 8 pattern per class, upsampled, plus per-image noise, saved as an
  8-bit PNG. The noise makes these PNGs nearly incompressible (about 9.5 KB at 105×105 against
  Omniglot's 0.3 KB), so decoding them costs about twice as much: a worst case for the end-to-end
  time, which both sides share.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mtl.device_runtime.preprocess import InputSpec

REPO = Path(__file__).resolve().parents[1]
OMNIGLOT_DIR = REPO.parent / "shared" / "data" / "omniglot"
_DRAWING = re.compile(r"(?:^|/)([^/]+/[^/]+)/[^/]+\.png$")  # …/Alphabet/characterNN/IMAGEID_DRAWER.png


class ImagesMissing(RuntimeError):
    """The Omniglot archives a workload asks for are not where they were looked for."""


def write_images(kind: str, ways: int, shots: int, queries: int, channels: int, png_size: int,
                 work: Path, omniglot: Path = OMNIGLOT_DIR) -> tuple[Path, list[str]]:
    """support/class_XX/I.png (K per class) and a query batch cycling over the classes → (support, queries)."""
    if kind == "omniglot":
        return _write_omniglot(ways, shots, queries, work, omniglot)
    return _write_synthetic(ways, shots, queries, channels, png_size, work)


def omniglot_drawings(root: Path = OMNIGLOT_DIR) -> dict[str, list[bytes]]:
    """Every character of the archives under `root` → its drawings' PNG bytes (sorted by file name); a
    character in two archives (Greek and Latin are in both) is read once."""
    archives = sorted(Path(root).glob("images_*.zip"))
    if not archives:
        raise ImagesMissing(f"no Omniglot archives (images_*.zip) in {root}; pass --omniglot PATH, or "
                            "--synthetic-images to measure generated PNGs instead")
    characters: dict[str, dict[str, bytes]] = {}  # Alphabet/characterNN → {file name: PNG bytes}
    for archive in archives:
        with zipfile.ZipFile(archive) as handle:
            for entry in handle.namelist():
                match = _DRAWING.search(entry)
                name = entry.rsplit("/", 1)[-1]
                if match and name not in (files := characters.setdefault(match.group(1), {})):
                    files[name] = handle.read(entry)  # a character already read from another archive is skipped
    return {character: [files[name] for name in sorted(files)] for character, files in sorted(characters.items())}


def _write_omniglot(ways: int, shots: int, queries: int, work: Path, root: Path) -> tuple[Path, list[str]]:
    drawings = omniglot_drawings(root)
    chosen = _chosen_characters(drawings, ways)
    need = shots + -(-queries // ways)  # support + this class's share of the queries
    short = [c for c in chosen if len(drawings[c]) < need]
    if short:
        raise ImagesMissing(f"Omniglot characters {short} have fewer than {need} drawings")
    support = work / "support"
    for c, character in enumerate(chosen):
        (support / f"class_{c:02d}").mkdir(parents=True)
        for i in range(shots):
            (support / f"class_{c:02d}" / f"{i}.png").write_bytes(drawings[character][i])
    (work / "queries").mkdir()
    paths = []
    for q in range(queries):
        path = work / "queries" / f"{q}.png"
        path.write_bytes(drawings[chosen[q % ways]][shots + q // ways])
        paths.append(str(path))
    return support, paths


def _chosen_characters(drawings: dict[str, list[bytes]], ways: int) -> list[str]:
    """`ways` characters drawn with seed 0 (from every alphabet alike); the same on every run."""
    names = sorted(drawings)
    if len(names) < ways:
        raise ImagesMissing(f"the Omniglot archives hold {len(names)} characters, fewer than {ways} ways")
    return [names[i] for i in np.random.default_rng(0).choice(len(names), ways, replace=False)]


def _write_synthetic(ways: int, shots: int, queries: int, channels: int, png_size: int,
                     work: Path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    patterns = [rng.integers(0, 256, (8, 8, channels)).astype(np.float32) for _ in range(ways)]
    support = work / "support"
    for c, pattern in enumerate(patterns):
        (support / f"class_{c:02d}").mkdir(parents=True)
        for i in range(shots):
            _save_png(pattern, rng, png_size, support / f"class_{c:02d}" / f"{i}.png")
    (work / "queries").mkdir()
    paths = [work / "queries" / f"{q}.png" for q in range(queries)]
    for q, path in enumerate(paths):
        _save_png(patterns[q % ways], rng, png_size, path)
    return support, [str(p) for p in paths]


def _noisy_pattern(pattern: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """The (8, 8, C) pattern upsampled to size × size with Gaussian noise → uint8 (H, W) or (H, W, C)."""
    image = np.kron(pattern, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
    image = np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
    return image[..., 0] if image.shape[-1] == 1 else image


def _save_png(pattern: np.ndarray, rng: np.random.Generator, size: int, path: Path) -> None:
    from PIL import Image

    Image.fromarray(_noisy_pattern(pattern, rng, size)).save(path)


def calibration_images(kind: str, channels: int, png_size: int, spec: InputSpec, ways: int, count: int = 192,
                       omniglot: Path = OMNIGLOT_DIR) -> np.ndarray:
    """Normalised images (count, C, H, W) for int8 calibration, through the device preprocessing: images
    of the workload's kind but never of its measured classes (Omniglot: characters not chosen;
    synthetic: patterns of another seed)."""
    from mtl.device_runtime.preprocess import preprocess

    if kind == "omniglot":
        drawings = omniglot_drawings(omniglot)
        chosen = set(_chosen_characters(drawings, ways))
        others = [d for character, ds in drawings.items() if character not in chosen for d in ds[:2]]
        picks = np.random.default_rng(1).choice(len(others), min(count, len(others)), replace=False)
        return preprocess([others[i] for i in picks], spec)
    rng = np.random.default_rng(1)
    images = [_noisy_pattern(rng.integers(0, 256, (8, 8, channels)).astype(np.float32), rng, png_size)
              for _ in range(count)]
    return preprocess(images, spec)
