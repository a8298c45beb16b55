"""Image decoding and resizing, re-exported from `device_runtime.preprocess` (its one definition).

Every loader goes through `load_image` / `convert_image`, so the device runtime reproduces the
training preprocessing exactly from an `InputSpec` stored in a bundle's manifest.
"""

from mtl.device_runtime.preprocess import IMAGE_SUFFIXES, RESIZE_METHODS, InputSpec, convert_image, load_image

__all__ = ["IMAGE_SUFFIXES", "RESIZE_METHODS", "InputSpec", "convert_image", "load_image"]
