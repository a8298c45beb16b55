"""The error family, re-exported from `device_runtime.errors` (its one definition, torch-free).

The CLI turns an `MtlError` into one line on stderr and a non-zero exit, without a traceback.
"""

from mtl.device_runtime.errors import BundleError, CheckpointError, ConfigError, DataError, MtlError, OutputError

__all__ = ["BundleError", "CheckpointError", "ConfigError", "DataError", "MtlError", "OutputError"]
