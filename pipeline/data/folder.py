"""`folder:PATH` — one sub-folder of images per class, plus the decoding helpers other loaders share.

A class is any folder under PATH that directly contains image files; its name is its path relative
to PATH (`Alphabet/character01`), its superclass the first path component when nested, "" when
flat. A top level made only of `train/`, `val/`, `test/` is read as an official class split.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.data.images import IMAGE_SUFFIXES, InputSpec, load_image
from mtl.pipeline.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FOLDER_SIZE = 84
SPLIT_FOLDERS = ("train", "val", "test")
# Pillow releases the GIL while it decodes and resizes, so threads pay off for big photos; for small
# images (Omniglot's 105x105 PNGs) the pool's overhead costs more than it saves (measured: 2x slower).
_PROBE = 32
_SLOW_IMAGE_S = 3e-4


def decode_images(sources: Sequence[str | Path | bytes], spec: InputSpec,
                  names: Sequence[str] | None = None, workers: int | None = None) -> np.ndarray:
    """Decode files or raw bytes through `load_image` → uint8 (n, C, H, W), in order."""
    labels = list(names) if names is not None else [None] * len(sources)
    out = np.empty((len(sources), spec.channels, spec.size, spec.size), dtype=np.uint8)
    return fill_images(out, lambda i: load_image(sources[i], spec, labels[i]), workers)


def fill_images(out: np.ndarray, make: Callable[[int], np.ndarray], workers: int | None = None) -> np.ndarray:
    """`out[i] = make(i)` for every row of `out`; returns `out`.

    The first rows are made in this thread to time them; the rest go to a thread pool only when a
    row is slow enough (large photos, big resizes) for threads to help.
    """
    start = time.perf_counter()
    head = min(_PROBE, len(out))
    for i in range(head):
        out[i] = make(i)
    per_row = (time.perf_counter() - start) / max(head, 1)
    workers = workers or min(8, os.cpu_count() or 1)
    rest = range(head, len(out))
    if workers > 1 and per_row > _SLOW_IMAGE_S and len(rest) > _PROBE:
        def one(i: int) -> None:
            out[i] = make(i)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, rest, chunksize=16))
    else:
        for i in rest:
            out[i] = make(i)
    return out


def scan_class_folders(root: Path) -> dict[str, list[Path]]:
    """Every folder under `root` that directly holds image files → its sorted image paths.

    Keys are POSIX paths relative to `root` in sorted walk order; hidden files and folders are
    skipped; symlinked folders are followed once (a link loop is not walked twice).
    """
    classes: dict[str, list[Path]] = {}
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        images = sorted(f for f in filenames if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES))
        relative = Path(dirpath).relative_to(root)
        if images and relative != Path("."):
            classes[relative.as_posix()] = [Path(dirpath) / f for f in images]
    return classes


def load_class_files(files: dict[str, list[tuple[str, Path | bytes]]], superclasses: Sequence[str],
                     spec: InputSpec, provenance: dict) -> ClassImages:
    """{class name: [(label, file or bytes), ...]} → `ClassImages`, one flat decode over every image.

    The label names the image in errors (a path, or `archive.zip:member` for bytes).
    """
    names = list(files)
    labels = [label for name in names for label, _ in files[name]]
    images = decode_images([item for name in names for _, item in files[name]], spec, labels)
    bounds = np.cumsum([len(files[name]) for name in names])[:-1]
    return ClassImages.from_arrays(np.split(images, bounds), names, superclasses, spec, provenance)


def folder_spec(image_size: int | None) -> InputSpec:
    """RGB at 84 px with ImageNet statistics unless the caller picks another size."""
    return InputSpec(size=image_size or FOLDER_SIZE, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def load_folder(path: Path, *, image_size: int | None = None, download: bool = False) -> ClassImages:
    """Read `PATH/<class>/<image>` (any depth) into `ClassImages`; `download` is ignored."""
    del download  # nothing to fetch: the folder is the user's own data
    layout = f"one sub-folder of images per class, e.g. {path}/<class>/<image>.png"
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist or is not a folder: expected {layout}")
    files = scan_class_folders(path)
    if not files:
        raise DataError(f"no class folders with images ({', '.join(IMAGE_SUFFIXES)}) under {path}: "
                        f"expected {layout}")
    provenance: dict = {"scheme": "folder", "path": str(path.resolve())}
    official = _official_split(list(files))
    if official is not None:
        provenance["official_split"] = official
        supers = ["" for _ in files]
    else:
        supers = [name.split("/")[0] if "/" in name else "" for name in files]
    labelled = {name: [(str(p), p) for p in paths] for name, paths in files.items()}
    return load_class_files(labelled, supers, folder_spec(image_size), provenance)


def _official_split(names: list[str]) -> dict[str, list[str]] | None:
    """Class names grouped by their top folder when every class lives under train/val/test."""
    tops = [name.split("/")[0] if "/" in name else "" for name in names]
    if not set(tops) <= set(SPLIT_FOLDERS) or "train" not in tops:
        return None
    return {part: [n for n, top in zip(names, tops, strict=True) if top == part] for part in SPLIT_FOLDERS}
