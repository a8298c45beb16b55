"""One error family for every mistake a user can make (torch-free, shared by every package).

The CLI turns an `MtlError` into one line on stderr and a non-zero exit, without a traceback.
Messages name the file, the class or the count at fault. `pipeline.errors` re-exports these
classes, so the server and the device raise, and the CLI catches, the same types.
"""


class MtlError(ValueError):
    """Base class: a user-facing error whose message is the whole explanation."""

    exit_code = 1


class ConfigError(MtlError):
    """An option or configuration value is out of range or inconsistent (a usage error)."""

    exit_code = 2


class DataError(MtlError):
    """A data source is missing, empty, unreadable or too small for the requested episodes."""


class CheckpointError(MtlError):
    """A checkpoint or run directory is missing, corrupt or incompatible with the request."""


class BundleError(MtlError):
    """A deploy bundle or an adapted state is missing, corrupt, unsafe or inconsistent with its manifest,
    or on-device adaptation produced non-finite numbers."""


class OutputError(MtlError):
    """An output path cannot be written: under a file, onto a directory, read-only, or a full disk. Whatever was
    there before is left as it was (every write goes to a temporary file that is renamed into place)."""
