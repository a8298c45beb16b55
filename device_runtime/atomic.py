"""Atomic writes (standard library only): write to a temporary sibling, fsync, then rename.

A crash at any point leaves either the previous file (or directory) or the new one, never a
half-written one. `pipeline.atomic` re-exports these functions. `check_output` refuses, before any work
is done, an output path that cannot be written (under a file, onto a directory, a read-only place); an
OS error while writing (a full disk) becomes one `OutputError` naming the path, and the temporary is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mtl.device_runtime.errors import ConfigError, OutputError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (same-directory temp file + `os.replace`)."""
    path = Path(path)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """OS errors while writing `path` (no space, read-only, a file where a directory must be) → `OutputError`."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def check_output(path: str | Path, option: str, *, directory: bool, marker: str | None = None) -> Path:
    """Refuse, before any work is done, an output that cannot be written: a directory where a file goes (or a
    file where a directory goes), a directory of other files (`marker`: the file that says mtl wrote it), a
    parent that is a file, or a place this process cannot write to."""
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} exists and is not a directory; choose another output path")
    if not directory and path.is_dir():
        raise ConfigError(f"{option} {path} is a directory; give a file path")
    if directory and marker and path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise ConfigError(f"{option} {path} is a non-empty directory without {marker}; refusing to replace it")
    existing = next(p for p in path.absolute().parents if p.exists())  # the file system root always exists
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write in {existing} (permission denied or a read-only "
                          "file system)")
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def check_png_target(path: str | Path, option: str) -> Path:
    """Refuse, before any work is done, a figure path that cannot become a PNG file (wrong suffix, a
    directory, under a file, not writable), so a long evaluation never ends in a traceback at the last write."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"{option} {path}: the figure is written as PNG; give a file name ending in .png")
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a directory; give a file name ending in .png")
    return check_output(path, option, directory=False)


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSON-lines file; a missing file has none."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one record by rewriting the (small) file atomically, so it is never half a line."""
    records = read_jsonl(path) + [record]
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write `files` (relative name → content) into `directory`, each one fsynced."""
    for name, data in files.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def replace_dir(path: str | Path, fill: Callable[[Path], None], *, marker: str) -> None:
    """Replace the directory `path` as a whole: `fill` a temporary sibling, then swap it in by renames.

    An existing directory is replaced only when it holds `marker` (the file that identifies what this
    function writes) or is empty, so a mistyped path never deletes unrelated files. If anything fails,
    the previous directory stays in place, complete.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a directory; choose another output path")
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise ConfigError(f"{path} is a non-empty directory without {marker}; refusing to replace it")
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            fill(tmp)
            _fsync_dir(tmp)
            _swap_in(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(new: Path, path: Path) -> None:
    """Rename `new` to `path`; an existing `path` is moved aside first and restored on failure."""
    if not path.exists():
        os.rename(new, path)
        _fsync_dir(path.parent)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.rmdir(old)
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(directory: Path) -> None:
    """Make renames inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
