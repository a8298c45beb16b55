"""Data sources → `ClassImages` (one uint8 tensor grouped by class), class splits and episode sampling.

`load_data("omniglot:PATH" | "folder:PATH" | "synthetic[:N]" | "cifar-fs:PATH" | "fc100:PATH" |
"mini-imagenet:PATH")` loads a source; `make_splits` divides its classes into disjoint train / val /
test parts. Every image is decoded by `load_image` / `convert_image` so a device reproduces it.
"""

from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.data.images import IMAGE_SUFFIXES, InputSpec, convert_image, load_image
from mtl.pipeline.data.sampler import Episodes, EpisodeSampler
from mtl.pipeline.data.spec import SCHEMES, data_scheme, load_data, parse_data_spec
from mtl.pipeline.data.splits import Splits, make_splits

__all__ = [
    "IMAGE_SUFFIXES",
    "SCHEMES",
    "ClassImages",
    "EpisodeSampler",
    "Episodes",
    "InputSpec",
    "Splits",
    "convert_image",
    "data_scheme",
    "load_data",
    "load_image",
    "make_splits",
    "parse_data_spec",
]
