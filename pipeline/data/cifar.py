"""`cifar-fs:PATH` and `fc100:PATH` — CIFAR-100 (train ∪ test, 600 images per class) with its few-shot splits.

CIFAR-FS (Bertinetto et al., "Meta-learning with differentiable closed-form solvers", ICLR 2019):
64 / 16 / 20 random classes. FC100 (Oreshkin et al., "TADAM", NeurIPS 2018): split by the 20 CIFAR
super-classes, 12 / 4 / 4, so test classes share no super-class with training. Both splits are
recorded in `provenance["official_split"]`; each class's super-class is recorded for both.

The data is torchvision's on-disk layout `PATH/cifar-100-python/{train,test,meta}`; torchvision only
downloads it (its md5 check would reject the tiny fakes the tests write). CIFAR's own format is a
pickle — read here, on the server, through an unpickler that admits numpy arrays and nothing else.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.data.folder import fill_images
from mtl.pipeline.data.images import InputSpec, convert_image
from mtl.pipeline.errors import DataError

CIFAR_SIZE = 32
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CIFAR_FOLDER = "cifar-100-python"
CIFAR_FILES = ("train", "test", "meta")

# CIFAR-100's 20 super-classes in coarse-label order (0..19), each with its 5 fine classes.
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
CIFAR_FS_SPLIT: dict[str, tuple[str, ...]] = {
    "train": ("apple", "aquarium_fish", "bear", "bee", "bottle", "bowl", "boy", "bridge", "bus", "can",
              "castle", "caterpillar", "chair", "clock", "cloud", "cockroach", "couch", "cup", "dinosaur",
              "dolphin", "elephant", "forest", "girl", "hamster", "house", "kangaroo", "keyboard",
              "lawn_mower", "lion", "lizard", "lobster", "mountain", "mouse", "mushroom", "oak_tree",
              "orange", "orchid", "palm_tree", "pear", "pine_tree", "plate", "porcupine", "possum",
              "rabbit", "raccoon", "ray", "road", "seal", "shrew", "skunk", "skyscraper", "snake",
              "spider", "squirrel", "streetcar", "sunflower", "tank", "tiger", "train", "trout", "tulip",
              "turtle", "willow_tree", "wolf"),
    "val": ("beaver", "beetle", "butterfly", "camel", "cattle", "crab", "crocodile", "flatfish", "lamp",
            "maple_tree", "motorcycle", "otter", "sea", "shark", "television", "tractor"),
    "test": ("baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck", "plain",
             "poppy", "rocket", "rose", "snail", "sweet_pepper", "table", "telephone", "wardrobe", "whale",
             "woman", "worm"),
}
FC100_SUPERCLASS_SPLIT = {"train": (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19), "val": (8, 11, 13, 16),
                          "test": (0, 7, 12, 14)}
_COARSE = list(CIFAR100_SUPERCLASSES)
FC100_SPLIT: dict[str, tuple[str, ...]] = {
    part: tuple(sorted(f for i in coarse for f in CIFAR100_SUPERCLASSES[_COARSE[i]]))
    for part, coarse in FC100_SUPERCLASS_SPLIT.items()}
SPLITS = {"cifar-fs": CIFAR_FS_SPLIT, "fc100": FC100_SPLIT}
SUPERCLASS_OF = {fine: coarse for coarse, fines in CIFAR100_SUPERCLASSES.items() for fine in fines}
# What a CIFAR-100 pickle may construct: an ndarray, its dtype, raw bytes, and nothing that runs code.
_ALLOWED = {("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
            ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"),
            ("_codecs", "encode")}


def cifar_spec(image_size: int | None) -> InputSpec:
    """RGB 32 px normalised with CIFAR-100 statistics."""
    return InputSpec(size=image_size or CIFAR_SIZE, channels=3, mean=CIFAR100_MEAN, std=CIFAR100_STD)


def load_cifar_fs(path: Path, *, image_size: int | None = None, download: bool = False) -> ClassImages:
    """CIFAR-100 with the CIFAR-FS class split."""
    return load_cifar100(path, "cifar-fs", image_size=image_size, download=download)


def load_fc100(path: Path, *, image_size: int | None = None, download: bool = False) -> ClassImages:
    """CIFAR-100 with the FC100 super-class split."""
    return load_cifar100(path, "fc100", image_size=image_size, download=download)


def load_cifar100(path: Path, split: str, *, image_size: int | None = None,
                  download: bool = False) -> ClassImages:
    """All 100 CIFAR classes (train then test images of each) → `ClassImages`, with `split` recorded."""
    folder = find_cifar100(path, download)
    names = read_cifar_file(folder / "meta")["fine_label_names"]
    if sorted(names) != sorted(SUPERCLASS_OF):
        raise DataError(f"{folder / 'meta'} does not list the 100 CIFAR-100 classes; is this CIFAR-100?")
    images, labels = [], []
    for part in ("train", "test"):
        entry = read_cifar_file(folder / part)
        data, fine = np.asarray(entry["data"], dtype=np.uint8), np.asarray(entry["fine_labels"], dtype=np.int64)
        if data.size != len(fine) * 3072 or fine.min(initial=0) < 0 or fine.max(initial=0) >= len(names):
            raise DataError(f"CIFAR-100 file {folder / part} holds {data.size} bytes of pixels for "
                            f"{len(fine)} labels in 0..{fine.max(initial=0)}; expected 3072 per label in 0..99")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(fine)
    pixels, targets = np.concatenate(images), np.concatenate(labels)  # (T, 32, 32, 3), (T,)
    spec = cifar_spec(image_size)
    # The pixels are already decoded; going through `convert_image` keeps resizing identical to a device's.
    converted = np.empty((len(pixels), 3, spec.size, spec.size), dtype=np.uint8)  # (T, 3, S, S)
    fill_images(converted, lambda i: convert_image(Image.fromarray(pixels[i]), spec))
    stacks = [converted[targets == c] for c in range(len(names))]
    provenance = {"scheme": split, "path": str(path.resolve()),
                  "files": [str(folder / f) for f in CIFAR_FILES],
                  "official_split": {part: list(classes) for part, classes in SPLITS[split].items()}}
    return ClassImages.from_arrays(stacks, names, [SUPERCLASS_OF[n] for n in names], spec, provenance)


def find_cifar100(path: Path, download: bool) -> Path:
    """The `cifar-100-python` folder under (or at) `path`, downloading it first when asked."""
    if download:
        _download(path)
    for folder in (path / CIFAR_FOLDER, path):
        if all((folder / f).is_file() for f in CIFAR_FILES):
            return folder
    raise DataError(f"CIFAR-100 not found at {path}: expected {path / CIFAR_FOLDER}/{{train,test,meta}} "
                    "(the python version of https://www.cs.toronto.edu/~kriz/cifar.html, unpacked); "
                    "download=True / --download fetches it")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds dicts, lists, strings, numbers and numpy arrays — nothing else."""

    def find_class(self, module: str, name: str) -> object:
        module = module.replace("numpy.core", "numpy._core", 1) if module.startswith("numpy.core") else module
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_file(file: Path) -> dict:
    """One CIFAR python-format file → its dict (keys as str)."""
    try:
        with open(file, "rb") as handle:
            entry = _ArrayUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read CIFAR-100 file {file}: {exc}") from None
    if not isinstance(entry, dict):
        raise DataError(f"cannot read CIFAR-100 file {file}: expected a dict, got {type(entry).__name__}")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    needed = ("fine_label_names",) if file.name == "meta" else ("data", "fine_labels")
    missing = [k for k in needed if k not in entry]
    if missing:
        raise DataError(f"CIFAR-100 file {file} lacks {', '.join(missing)}")
    return entry


def _download(path: Path) -> None:
    """Fetch and unpack CIFAR-100 with torchvision (verifies its md5; skips what is already there)."""
    from torchvision.datasets import CIFAR100  # lazy: torchvision is slow to import and only needed here

    try:
        CIFAR100(root=str(path), train=True, download=True)
    except Exception as exc:  # network errors arrive as many types; the user needs the one line
        raise DataError(f"could not download CIFAR-100 into {path}: {exc}") from None
