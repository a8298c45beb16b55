"""Bounded reads of regular files: what the device runtime opens is checked before a byte is read.

A path can name something that is not a file — `/dev/zero` (reads forever), a FIFO (blocks until a writer
comes), a directory, a socket — or a file far larger than anything mtl writes. `read_regular` opens without
blocking, checks with `fstat` on the open descriptor (no race between a check and the open) that it is a
regular file no larger than `limit`, and reads at most `limit` bytes, so neither memory nor time is unbounded.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from mtl.device_runtime.errors import DataError, MtlError

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


def open_regular(path: str | Path, limit: int, what: str, error: type[MtlError] = DataError) -> BinaryIO:
    """`path` opened for reading after checking (on the open descriptor) that it is a regular file of at most
    `limit` bytes; anything else raises `error` naming `what` (e.g. "bundle", "image") and the path."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path} is not a regular file ({_kind(info.st_mode)}); give a file")
        if info.st_size > limit:
            raise error(f"{what} {path} is {info.st_size:,} bytes, more than the {_size(limit)} a {what} may be")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, limit: int, what: str, error: type[MtlError] = DataError) -> bytes:
    """The bytes of the regular file `path` (see `open_regular`), at most `limit` of them."""
    with open_regular(path, limit, what, error) as handle:
        try:
            data = _read_at_most(handle, limit + 1)
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:  # the file grew after fstat
        raise error(f"{what} {path} is more than the {_size(limit)} a {what} may be")
    return data


def _read_at_most(handle: BinaryIO, count: int) -> bytes:
    """Up to `count` bytes, read in chunks: `read(count)` would allocate all of `count` up front."""
    chunks, left = [], count
    while left > 0:
        chunk = handle.read(min(left, 16 * MIB))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def _size(limit: int) -> str:
    for unit, name in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if limit >= unit:
            return f"{limit / unit:g} {name}"
    return f"{limit} bytes"
