"""Where a bundle's bytes come from: a directory, or a `.mtlb` zip read in memory, never extracted.

A zip is checked as a whole from its central directory before any member is decompressed: every
name stays inside the bundle, no symbolic links, no duplicate or encrypted members, and no member
(or total) that expands far beyond what a bundle can hold (a zip bomb).
"""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from mtl.device_runtime.errors import BundleError
from mtl.device_runtime.files import open_regular, read_regular
from mtl.device_runtime.manifest import check_member_name
from mtl.device_runtime.schema import MANIFEST
from mtl.device_runtime.signing import SIGNATURE

MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few kB
MAX_MEMBERS = 64  # a bundle holds 4 or 5 files; zipfile parses every central-directory entry when it opens
MAX_DIRECTORY_BYTES = 1 << 20
MAX_MEMBER_BYTES = 2 << 30  # protobuf caps one ONNX file (without external data) at 2 GiB
MAX_TOTAL_BYTES = 4 << 30
MAX_RATIO = 200  # float weights deflate by ~1.1×; hundreds of × only comes from padding
RATIO_FLOOR = 1 << 20  # small members (JSON, tiny graphs) may compress well
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same bundle always zips to the same bytes


class DirSource:
    """A bundle directory; a file is read only if it is a regular file inside the directory."""

    def __init__(self, root: Path) -> None:
        self.root, self.label = root, str(root)

    def read(self, name: str) -> bytes:
        check_member_name(name, self.label)
        path = self.root
        for part in name.split("/"):
            path = path / part
            if path.is_symlink():
                raise BundleError(f"{self.label}: {name} is a symbolic link; a bundle holds plain files only")
        if not path.exists():
            raise BundleError(f"{self.label}: missing file {name}")
        return read_regular(path, MAX_MANIFEST_BYTES if name == MANIFEST else MAX_MEMBER_BYTES,
                            "bundle file", BundleError)

    def check_listed(self, names: set[str]) -> None:
        """Extra files in a directory are ignored (never read); only a zip is closed over its manifest."""

    def close(self) -> None:
        """Nothing is held open between reads."""

    def read_optional(self, name: str) -> bytes | None:
        """A file the bundle may hold (the signature): its bytes, or None when absent."""
        path = self.root / name
        return self.read(name) if path.exists() or path.is_symlink() else None


class ZipSource:
    """A `.mtlb` zip (bytes in memory, or an open regular file read member by member), its central directory
    checked before anything is decompressed."""

    def __init__(self, data: bytes | BinaryIO, label: str) -> None:
        self.label = label
        handle = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
        try:
            _check_directory_size(handle, label)
            self.zip = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, struct.error,
                NotImplementedError) as exc:  # NotImplementedError: a member needing a zip version zipfile lacks
            handle.close()
            raise BundleError(f"{label}: not a valid .mtlb zip: {exc}") from None
        except BundleError:
            handle.close()
            raise
        self.members = self._check_members()

    def close(self) -> None:
        self.zip.close()

    def _check_members(self) -> dict[str, zipfile.ZipInfo]:
        members: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in self.zip.infolist():
            name = info.filename
            if name.endswith("/") and not info.file_size:
                check_member_name(name.rstrip("/"), self.label)
                continue  # a directory entry carries no data
            check_member_name(name, self.label)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise BundleError(f"{self.label}: member {name} is a symbolic link; a bundle holds plain files only")
            if name in members:
                raise BundleError(f"{self.label}: duplicate member {name}")
            if info.flag_bits & 0x1:
                raise BundleError(f"{self.label}: member {name} is encrypted")
            total += info.file_size
            self._check_size(info, total)
            members[name] = info
        return members

    def _check_size(self, info: zipfile.ZipInfo, total: int) -> None:
        name, size = info.filename, info.file_size
        limit = MAX_MANIFEST_BYTES if name == MANIFEST else MAX_MEMBER_BYTES
        if size > limit or total > MAX_TOTAL_BYTES or (
                size > RATIO_FLOOR and size > MAX_RATIO * max(info.compress_size, 1)):
            raise BundleError(f"{self.label}: member {name} expands from {info.compress_size} to {size} bytes "
                              f"(total {total}), far beyond what a bundle holds; refusing a possible zip bomb")

    def read(self, name: str) -> bytes:
        info = self.members.get(name)
        if info is None:
            raise BundleError(f"{self.label}: missing file {name}")
        try:
            return self.zip.read(info)  # bounded by the checked file_size; the CRC is verified
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise BundleError(f"{self.label}: cannot read member {name}: {exc}") from None

    def check_listed(self, names: set[str]) -> None:
        """Every member must be the manifest or a file it lists (with its sha256)."""
        extra = sorted(set(self.members) - names - {MANIFEST, SIGNATURE})
        if extra:
            raise BundleError(f"{self.label}: member {extra[0]} is not listed in {MANIFEST} files")


    def read_optional(self, name: str) -> bytes | None:
        return self.read(name) if name in self.members else None


def open_source(path: Path) -> DirSource | ZipSource:
    if path.is_dir():
        return DirSource(path)
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist")
    return ZipSource(open_regular(path, MAX_TOTAL_BYTES, "bundle", BundleError), str(path))


def _check_directory_size(handle: BinaryIO, label: str) -> None:
    """Refuse, from the end-of-central-directory record alone, a zip whose central directory is far larger than
    a bundle's: zipfile would parse every entry of it into memory before any other check could run."""
    handle.seek(0, io.SEEK_END)
    size = handle.tell()
    tail_length = min(size, 22 + 0xFFFF)  # the record (22 bytes) and the longest comment
    handle.seek(size - tail_length)
    tail = handle.read(tail_length)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise BundleError(f"{label}: not a valid .mtlb zip: no end-of-central-directory record")
    entries, directory_bytes = struct.unpack("<HI", tail[at + 10:at + 16])
    if entries > MAX_MEMBERS or directory_bytes > MAX_DIRECTORY_BYTES:
        raise BundleError(f"{label}: the zip lists {entries} members in a {directory_bytes:,}-byte directory; a "
                          f"bundle has at most {MAX_MEMBERS}")
    handle.seek(0)


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """Files (name → content) → deterministic `.mtlb` zip bytes: the manifest first, then the other files in name
    order, fixed timestamps and permissions. The one zip writer of mtl: the exporter and the device both use it,
    so the same files always give the same bytes (two exports of one checkpoint are byte-identical)."""
    names = sorted(files, key=lambda name: (name != MANIFEST, name))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, files[name])
    return buffer.getvalue()
