"""A `.mtlb` zip is checked from its central directory before any member is decompressed."""

import io
import stat
import warnings
import zipfile

import pytest

from mtl.device_runtime import Bundle, BundleError


@pytest.fixture
def members(bundle_dir):
    """The bundle's files, manifest first, as (name, bytes)."""
    names = ["manifest.json", "embed.onnx", "init_head.onnx", "adapt_step.onnx", "predict.onnx", "init.npz"]
    return [(name, (bundle_dir / name).read_bytes()) for name in names]


def write_zip(path, entries):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate-name case
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for entry in entries:
                info, data = entry if isinstance(entry[0], zipfile.ZipInfo) else (zipfile.ZipInfo(entry[0]), entry[1])
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
    return path


def test_a_well_formed_mtlb_loads(members, tmp_path):
    bundle = Bundle.load(write_zip(tmp_path / "ok.mtlb", members))
    assert bundle.manifest.feature_dim == 8


@pytest.mark.parametrize("name, message", [
    ("../evil.txt", "unsafe file name '../evil.txt'"),
    ("sub/../../evil.txt", "unsafe file name"),
    ("/etc/evil.txt", "unsafe file name '/etc/evil.txt'"),
    ("C:\\evil.txt", "unsafe file name"),
])
def test_a_member_path_outside_the_bundle_is_refused(members, tmp_path, name, message):
    path = write_zip(tmp_path / "bad.mtlb", members + [(name, b"x")])
    with pytest.raises(BundleError, match="bad.mtlb") as error:
        Bundle.load(path)
    assert message in str(error.value)


def test_a_symlink_member_is_refused(members, tmp_path):
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = write_zip(tmp_path / "bad.mtlb", members + [(link, b"/etc/passwd")])
    with pytest.raises(BundleError, match="member link is a symbolic link"):
        Bundle.load(path)


def test_a_duplicate_member_is_refused(members, tmp_path):
    path = write_zip(tmp_path / "bad.mtlb", members + [("embed.onnx", b"second copy")])
    with pytest.raises(BundleError, match="duplicate member embed.onnx"):
        Bundle.load(path)


def test_a_zip_bomb_is_refused_before_it_is_decompressed(members, tmp_path, monkeypatch):
    path = write_zip(tmp_path / "bomb.mtlb", members + [("padding.bin", bytes(32 << 20))])

    def never(*args, **kwargs):
        raise AssertionError("a member was decompressed")

    monkeypatch.setattr(zipfile.ZipFile, "read", never)
    with pytest.raises(BundleError, match="padding.bin expands .* zip bomb"):
        Bundle.load(path)


def test_a_member_the_manifest_does_not_list_is_refused(members, tmp_path):
    path = write_zip(tmp_path / "extra.mtlb", members + [("notes.txt", b"hello")])
    with pytest.raises(BundleError, match="notes.txt is not listed in manifest.json"):
        Bundle.load(path)


def test_a_missing_member_is_named(members, tmp_path):
    path = write_zip(tmp_path / "short.mtlb", [m for m in members if m[0] != "init.npz"])
    with pytest.raises(BundleError, match="short.mtlb: missing file init.npz"):
        Bundle.load(path)


def test_a_file_that_is_not_a_zip_is_named(tmp_path):
    (tmp_path / "junk.mtlb").write_bytes(b"PK but not really a zip")
    with pytest.raises(BundleError, match="junk.mtlb: not a valid .mtlb zip"):
        Bundle.load(tmp_path / "junk.mtlb")


@pytest.mark.parametrize("member", ["manifest.json", "embed.onnx", "init.npz"])
def test_a_flipped_byte_in_a_zipped_member_is_refused(members, tmp_path, member):
    path = write_zip(tmp_path / "flip.mtlb", members)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=member.replace(".", r"\.")):
        Bundle.load(path)
