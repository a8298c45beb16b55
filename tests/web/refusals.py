"""THE refusal corpus both device runtimes are held to: every bad bundle of the Python runtime's own tests
(tests/bad_inputs: broken files, hostile manifest values, unsafe zips, graphs with external data or foreign
operators), written as `.mtlb` files, each with the words its refusal must contain. One list for both runtimes:
a fault added to the Python tests is checked against the web runtime too."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import shutil
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from mtl.device_runtime.archive import zip_bytes
from tests.bad_inputs.test_bundles import BUNDLE_FAULTS, ZIP_FAULTS, _zip
from tests.bad_inputs.test_hostile_bundles import (
    HOSTILE_VALUES,
    _raw_manifest,
    contrib_op_graph,
    external_constant_in_a_subgraph,
    external_initializer,
)
from tests.device_runtime.bundle_factory import replace_file, write_bundle

NAMES = ["manifest.json", "embed.onnx", "adapt_step.onnx", "predict.onnx", "init.npz"]


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    culprit: str | None  # None: the corpus's good bundle, which both must accept


def _zipped(directory: Path, path: Path) -> Path:
    path.write_bytes(zip_bytes({p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}))
    return path


def refusal_corpus(root: Path) -> list[Case]:
    root.mkdir(parents=True)
    good = write_bundle(root / "good")
    cases = [Case("good", _zipped(good, root / "good.mtlb"), None)]

    def damaged(name: str, damage, culprit: str) -> None:
        directory = root / name
        shutil.copytree(good, directory)
        damage(directory)
        cases.append(Case(name, _zipped(directory, root / f"{name}.mtlb"), culprit))
        shutil.rmtree(directory)

    for name, (damage, culprit) in BUNDLE_FAULTS.items():
        damaged(name, damage, culprit)
    for name, (key_path, raw, culprit) in HOSTILE_VALUES.items():
        damaged(f"hostile-{name}", lambda b, k=key_path, r=raw: _raw_manifest(b, k, r), culprit)
    for name, graph in (("external-initializer", external_initializer),
                        ("external-in-a-subgraph", external_constant_in_a_subgraph)):
        damaged(name, lambda b, g=graph: replace_file(b, "embed.onnx", g("secret.bin")), "outside the file")
    damaged("contrib-op", lambda b: replace_file(b, "embed.onnx", contrib_op_graph()),
            "non-standard domain(s) com.microsoft")
    members = [(name, (good / name).read_bytes()) for name in NAMES]
    for name, (change, culprit) in ZIP_FAULTS.items():
        entries = change(list(members))
        path = root / f"zip-{name}.mtlb"
        path.write_bytes(b"PK\x03\x04 not really" if entries is None else _zip(entries))
        cases.append(Case(f"zip-{name}", path, culprit))
    return cases


# ------------------------------------------------------------------ where the two runtimes once disagreed
def _rehash(files: dict[str, bytes], edit=None) -> dict[str, bytes]:
    manifest = json.loads(files["manifest.json"])
    if edit is not None:
        edit(manifest)
    for name in manifest["files"]:
        if name in files:
            manifest["files"][name] = hashlib.sha256(files[name]).hexdigest()
    return {**files, "manifest.json": json.dumps(manifest, indent=2).encode()}


def _npz(members: dict[str, bytes], directories: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name in directories:
            archive.writestr(name, b"")
    return buffer.getvalue()


def _npy(array: np.ndarray, header: str | None = None) -> bytes:
    if header is None:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()
    text = header.encode("latin1")
    text += b" " * (64 - (10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + array.astype("<f4").tobytes()


def _directory_field(data: bytes, member: str, offset: int, fmt: str, value: int) -> bytes:
    """Set a central-directory field of one member (e.g. its flags, offset 8) to `value`."""
    data = bytearray(data)
    at = data.rfind(b"PK\x05\x06")
    count, _, position = struct.unpack("<HII", data[at + 10:at + 20])
    for _ in range(count):
        name_length, extra, comment = struct.unpack("<HHH", data[position + 28:position + 34])
        if bytes(data[position + 46:position + 46 + name_length]).decode() == member:
            struct.pack_into(fmt, data, position + offset, value)
        position += 46 + name_length + extra + comment
    return bytes(data)


def _end_record_count(data: bytes, change: int) -> bytes:
    data = bytearray(data)
    at = data.rfind(b"PK\x05\x06")
    count = struct.unpack("<H", data[at + 10:at + 12])[0]
    struct.pack_into("<HH", data, at + 8, count + change, count + change)
    return bytes(data)


def agreement_cases(root: Path) -> list[Path]:
    """Bundles on which a review found the runtimes disagreeing (a BOM, "__proto__" names, a zip whose end record
    miscounts its directory, zip flag bits, a big-endian or raw init.npz, non-ASCII digits, long emoji names): both
    must now give the same answer — accept, or refuse with the same message."""
    root.mkdir(parents=True)
    good = write_bundle(root / "good", learned_lr=True)
    files = {p.name: p.read_bytes() for p in sorted(good.iterdir())}
    arrays = dict(np.load(io.BytesIO(files["init.npz"])))
    npy = {f"{k}.npy": _npy(v) for k, v in arrays.items()}
    predict = onnx.load_from_string(files["predict.onnx"])
    emoji = "\U0001f600" * 200
    out = {
        "bom": {**files, "manifest.json": b"\xef\xbb\xbf" + files["manifest.json"]},
        "algorithm-object": _rehash(files, lambda m: m["producer"].update(algorithm={})),
        "npz-proto": _rehash({**files, "init.npz": _npz({**npy, "__proto__.npy": _npy(np.zeros(3, np.float32))})}),
        "npz-big-endian": _rehash({**files, "init.npz": _npz({f"{k}.npy": _npy(v.astype(">f4"))
                                                              for k, v in arrays.items()})}),
        "npz-directory": _rehash({**files, "init.npz": _npz(npy, ("d/",))}),
        "npz-raw-member": _rehash({**files, "init.npz": _npz({"lr_weight.npy": npy["lr_weight.npy"],
                                                             "lr_bias": b"hello"})}),
        "npz-extra-header-key": _rehash({**files, "init.npz": _npz({**npy, "lr_weight.npy": _npy(
            arrays["lr_weight"], "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 8), 'extra': 1, }")})}),
        "arabic-digit-shots": _rehash(files, lambda m: m.update(open_set={"known_loss": 0.05,
                                                                          "thresholds": {"\u0661": 0.5}})),
        "superscript-shots": _rehash(files, lambda m: m.update(open_set={"known_loss": 0.05,
                                                                         "thresholds": {"\u00b2": 0.5}})),
        "emoji-name": _rehash({**files, emoji: b"x"}, lambda m: m["files"].update({emoji: "0" * 64})),
    }
    for domain in ("__proto__", "com.example"):
        model = copy.deepcopy(predict)
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
        out[f"opset-{domain}"] = _rehash({**files, "predict.onnx": model.SerializeToString()})
    paths = []
    for name, content in out.items():
        paths.append(root / f"{name}.mtlb")
        paths[-1].write_bytes(zip_bytes(content))
    zipped = zip_bytes(files)
    raw = {"end-record-fewer": _end_record_count(zip_bytes({**files, "zzz-extra.bin": b"junk"}), -1),
           "end-record-more": _end_record_count(zipped, +1),
           "flag-bit-5": _directory_field(zipped, "embed.onnx", 8, "<H", 0x20),
           "flag-bit-6": _directory_field(zipped, "embed.onnx", 8, "<H", 0x40),
           "zip-version-6.4": _directory_field(zipped, "embed.onnx", 6, "<H", 64)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr("\ufeff" + name if name == "manifest.json" else name, data)
    raw["bom-member-name"] = buffer.getvalue()
    for name, content in raw.items():
        paths.append(root / f"{name}.mtlb")
        paths[-1].write_bytes(content)
    return paths
