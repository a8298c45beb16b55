"""Torch-free on-device adaptation with numpy, onnxruntime and Pillow (docs/bundle.md).

`Bundle.load` verifies a deploy bundle; an `Adapter` embeds a few labelled images per new class,
runs the exported update step, predicts, and saves / loads its adapted state atomically.
Names are imported lazily, so `device_runtime.errors` (shared with `pipeline`) never loads onnxruntime.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtl.device_runtime.adapter import Adapter, AdaptResult
    from mtl.device_runtime.bundle import Bundle
    from mtl.device_runtime.errors import BundleError, ConfigError, DataError, MtlError
    from mtl.device_runtime.preprocess import InputSpec

_EXPORTS = {"Adapter": "adapter", "AdaptResult": "adapter", "Bundle": "bundle", "BundleError": "errors",
            "ConfigError": "errors", "DataError": "errors", "MtlError": "errors", "InputSpec": "preprocess"}
__all__ = ["AdaptResult", "Adapter", "Bundle", "BundleError", "ConfigError", "DataError", "InputSpec", "MtlError"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'device_runtime' has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
