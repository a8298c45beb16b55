"""`omniglot:PATH` — Omniglot (Lake et al., Science 2015) read straight from its archives or folders.

PATH may hold `images_background*.zip` / `images_evaluation*.zip`, the folders they unpack to
(`images_background_small1/<Alphabet>/<characterNN>/*.png`), torchvision's `omniglot-py/` layout,
or be one such archive or folder itself. Zips are read in memory, never extracted. A class is
`Alphabet/characterNN` with the alphabet as superclass; an alphabet present in several archives
(Greek and Latin are in both `small` subsets) is kept once.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.data.folder import load_class_files, scan_class_folders
from mtl.pipeline.data.images import InputSpec
from mtl.pipeline.errors import DataError

OMNIGLOT_SIZE = 28
EXPECTED = ("images_background*.zip / images_evaluation*.zip archives, the images_*/<Alphabet>/"
            "<characterNN>/*.png folders they unpack to, or torchvision's omniglot-py/ layout")

Entries = dict[str, list[tuple[str, Path | bytes]]]


def omniglot_spec(image_size: int | None) -> InputSpec:
    """Grey 28 px, inverted so strokes are bright (255) on a dark background (the source is black on white)."""
    return InputSpec(size=image_size or OMNIGLOT_SIZE, channels=1, invert=True)


def load_omniglot(path: Path, *, image_size: int | None = None, download: bool = False) -> ClassImages:
    """Every character of every archive/folder under `path` → `ClassImages` (classes sorted by name)."""
    if download:
        _download(path)
    sources = find_omniglot_sources(path)
    files: Entries = {}
    duplicates = 0
    for source in sources:
        entries = _zip_entries(source) if source.is_file() else _folder_entries(source)
        for name, items in entries.items():
            if name in files:
                duplicates += 1
            else:
                files[name] = items
    if not files:
        raise DataError(f"no Omniglot characters found in {', '.join(map(str, sources))}: expected {EXPECTED}")
    names = sorted(files)
    provenance = {"scheme": "omniglot", "path": str(path.resolve()),
                  "sources": [str(s.resolve()) for s in sources], "duplicate_classes_skipped": duplicates}
    return load_class_files({n: files[n] for n in names}, [n.split("/")[0] for n in names],
                            omniglot_spec(image_size), provenance)


def find_omniglot_sources(path: Path) -> list[Path]:
    """Archives and unpacked folders to read, background before evaluation, folders before zips.

    A zip whose unpacked folder sits beside it is skipped (torchvision keeps both after a download).
    """
    if path.is_file() and path.suffix.lower() == ".zip":
        return [path]
    if not path.is_dir():
        raise DataError(f"Omniglot data not found at {path}: expected {EXPECTED} "
                        "(download=True / --download fetches the full set)")
    sources: list[Path] = []
    for root in (path, path / "omniglot-py"):
        if not root.is_dir():
            continue
        folders = sorted(p for p in root.glob("images_*") if p.is_dir())
        names = {p.name for p in folders}
        zips = sorted(p for p in root.glob("images_*.zip") if p.is_file() and p.stem not in names)
        sources += folders + zips
    if not sources and _looks_unpacked(path):
        sources = [path]
    if not sources:
        raise DataError(f"no Omniglot archives or folders in {path}: expected {EXPECTED}")
    return sources


def _looks_unpacked(path: Path) -> bool:
    """True when `path` itself is an unpacked archive root (`<Alphabet>/<character>/*.png`)."""
    return any(True for _ in path.glob("*/*/*.png"))


def _zip_entries(archive: Path) -> Entries:
    """`Alphabet/characterNN` → [(label, png bytes)] for every drawing in one archive, in name order."""
    entries: Entries = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                parts = info.filename.split("/")
                if (info.is_dir() or len(parts) < 3 or not parts[-1].lower().endswith(".png")
                        or parts[0] == "__MACOSX" or parts[-1].startswith(".")):
                    continue
                name = f"{parts[-3]}/{parts[-2]}"
                entries.setdefault(name, []).append((f"{archive}:{info.filename}", zf.read(info)))
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read Omniglot archive {archive}: {exc}") from None
    return entries


def _folder_entries(root: Path) -> Entries:
    """`Alphabet/characterNN` → [(label, png path)] for an unpacked archive folder."""
    return {name: [(str(p), p) for p in paths] for name, paths in scan_class_folders(root).items()
            if name.count("/") == 1}


def _download(path: Path) -> None:
    """Fetch both full Omniglot archives with torchvision into `path/omniglot-py/` (skips what exists)."""
    from torchvision.datasets import Omniglot  # lazy: torchvision is slow to import and only needed here

    for background in (True, False):
        try:
            Omniglot(root=str(path), background=background, download=True)
        except Exception as exc:  # network errors arrive as many types; the user needs the one line
            raise DataError(f"could not download Omniglot into {path}: {exc}") from None
