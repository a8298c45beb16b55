"""`mini-imagenet:PATH` — miniImageNet with the Ravi & Larochelle (ICLR 2017) class split.

PATH holds `train.csv`, `val.csv`, `test.csv` (header `filename,label`; 64 / 16 / 20 classes of 600
images) and an `images/` folder with the files they name (flat, or `images/<label>/<filename>`).
The split comes from the CSVs and is recorded in `provenance["official_split"]`.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.data.folder import IMAGENET_MEAN, IMAGENET_STD, load_class_files
from mtl.pipeline.data.images import InputSpec
from mtl.pipeline.errors import DataError

MINI_IMAGENET_SIZE = 84
PARTS = ("train", "val", "test")
LAYOUT = ("train.csv, val.csv and test.csv (Ravi & Larochelle split, header 'filename,label') "
          "and an images/ folder holding the files they list")


def mini_imagenet_spec(image_size: int | None) -> InputSpec:
    """RGB 84 px normalised with ImageNet statistics."""
    return InputSpec(size=image_size or MINI_IMAGENET_SIZE, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def load_mini_imagenet(path: Path, *, image_size: int | None = None,
                       download: bool = False) -> ClassImages:
    """Every class of the three CSVs (train, then val, then test) → `ClassImages`; `download` is refused."""
    if download:
        raise DataError(f"miniImageNet cannot be downloaded automatically; put {LAYOUT} in {path}")
    missing = [str(path / f"{part}.csv") for part in PARTS if not (path / f"{part}.csv").is_file()]
    if missing or not (path / "images").is_dir():
        absent = ", ".join(missing + ([] if (path / "images").is_dir() else [str(path / "images")]))
        raise DataError(f"miniImageNet not found at {path} (missing {absent}): expected {LAYOUT}")
    files: dict[str, list[tuple[str, Path | bytes]]] = {}
    split: dict[str, list[str]] = {}
    for part in PARTS:
        rows = read_split_csv(path / f"{part}.csv")
        split[part] = list(dict.fromkeys(label for _, label in rows))
        for label in split[part]:
            if label in files:
                raise DataError(f"class {label} of {path / f'{part}.csv'} is also in an earlier split CSV")
            files[label] = []
        for filename, label in rows:
            image = _image_path(path / "images", filename, label, path / f"{part}.csv")
            files[label].append((str(image), image))
    provenance = {"scheme": "mini-imagenet", "path": str(path.resolve()), "official_split": split,
                  "files": [str(path / f"{part}.csv") for part in PARTS]}
    return load_class_files(files, ["" for _ in files], mini_imagenet_spec(image_size), provenance)


def read_split_csv(file: Path) -> list[tuple[str, str]]:
    """(filename, label) rows of one split CSV, in file order."""
    with open(file, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"filename", "label"} <= set(reader.fieldnames):
            raise DataError(f"{file} must start with the header 'filename,label', got {reader.fieldnames}")
        rows = [(row["filename"], row["label"]) for row in reader]
    if any(not filename or not label for filename, label in rows):
        raise DataError(f"{file} has a row without filename or label")
    if not rows:
        raise DataError(f"{file} lists no images")
    return rows


def _image_path(images: Path, filename: str, label: str, csv_file: Path) -> Path:
    """`images/filename`, else `images/label/filename`; a missing file names the CSV that lists it."""
    for candidate in (images / filename, images / label / filename):
        if candidate.is_file():
            return candidate
    raise DataError(f"image {filename} listed in {csv_file} is missing: expected {images / filename}")
