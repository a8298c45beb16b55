"""Broken, unsafe or hostile bundles, refused naming the fault before any graph reaches onnxruntime.

Each bad input ends in one line on stderr naming the culprit, a non-zero exit, no traceback, and nothing
written or the previous output left as it was."""

import io
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mtl.cli.app import app
from tests.bad_inputs.helpers import fails_cleanly, runner
from tests.device_runtime.bundle_factory import read_manifest, replace_file, write_bundle, write_manifest


def _flip(bundle: Path, name: str, at: float) -> None:
    data = bytearray((bundle / name).read_bytes())
    data[int(at * (len(data) - 1))] ^= 0x01
    (bundle / name).write_bytes(bytes(data))


def _edit(change):
    def apply(bundle: Path) -> None:
        meta = read_manifest(bundle)
        change(meta)
        write_manifest(bundle, meta)

    return apply


def _swap_graph_input(bundle: Path) -> None:
    from tests.device_runtime.bundle_factory import embed_graph, projection

    replace_file(bundle, "embed.onnx", embed_graph(projection(), input_name="pixels"))


BUNDLE_FAULTS = {
    "missing-file": (lambda b: (b / "predict.onnx").unlink(), "missing file predict.onnx"),
    "missing-manifest": (lambda b: (b / "manifest.json").unlink(), "missing file manifest.json"),
    **{f"flipped-byte-{name}-{at}": ((lambda b, n=name, a=at: _flip(b, n, a)), f"{name}: sha256")
       for name in ("embed.onnx", "adapt_step.onnx", "predict.onnx", "init.npz") for at in (0.0, 0.5, 1.0)},
    "manifest-not-json": (lambda b: (b / "manifest.json").write_text("{schema"), "manifest.json is not valid JSON"),
    "manifest-not-object": (lambda b: (b / "manifest.json").write_text("[1, 2]"), "must hold a JSON object"),
    "missing-key-feature_dim": (_edit(lambda m: m.pop("feature_dim")), "missing key 'feature_dim'"),
    "missing-key-files": (_edit(lambda m: m.pop("files")), "missing key 'files'"),
    "missing-key-input.std": (_edit(lambda m: m["input"].pop("std")), "missing key 'input.std'"),
    "unknown-schema": (_edit(lambda m: m.update(schema="mtl-bundle/9")), "unsupported schema 'mtl-bundle/9'"),
    "wrong-type-feature_dim": (_edit(lambda m: m.update(feature_dim="8")), "feature_dim must be an integer"),
    "wrong-type-lr": (_edit(lambda m: m["adapt"].update(lr=[0.1])), "adapt.lr must be a number"),
    "wrong-type-bool-as-int": (_edit(lambda m: m.update(opset=True)), "opset must be an integer"),
    "bad-digest": (_edit(lambda m: m["files"].update({"init.npz": "abc"})), "files.init.npz must be a lower-case"),
    "unsafe-file-name": (_edit(lambda m: m["graphs"]["embed"].update(file="../embed.onnx")), "unsafe file name"),
    "onnx-not-onnx": (lambda b: replace_file(b, "embed.onnx", b"\x08\x07not a model at all"), "embed.onnx: not an"),
    "onnx-inputs-differ": (_swap_graph_input, "embed.onnx: graph inputs ['pixels'] do not match"),
    "npz-with-pickle": (lambda b: replace_file(b, "init.npz", _pickled_npz()), "init.npz: not a readable .npz"),
    "background-not-in-init": (_edit(lambda m: m.update(open_set=_open_set(background=4))),
                               "init.arrays must be ['open_set_background']"),
    "background-rows-differ": (lambda b: _background(b, rows=3, declared=5),
                               "init.npz: open_set_background has shape [3, 8], manifest.json says [5, 8]"),
    "background-count-zero": (_edit(lambda m: m.update(open_set=_open_set(background=0))),
                              "open_set.background must be between 1 and 4096"),
    "background-not-finite": (lambda b: _background(b, rows=2, declared=2, fill=np.nan),
                              "init.npz: open_set_background must hold finite floats"),
    "background-beyond-float32": (lambda b: _background(b, rows=2, declared=2, fill=1e300, dtype=np.float64),
                                  "init.npz: open_set_background must hold finite floats, got float64"),
}


def _open_set(**extra) -> dict:
    return {"known_loss": 0.05, "thresholds": {"1": 0.1}, **extra}


def _background(bundle: Path, rows: int, declared: int, fill: float = 0.5, dtype=np.float32) -> None:
    """A background of `rows` rows in init.npz, the manifest declaring `declared`."""
    from tests.device_runtime.bundle_factory import DIM, add_background

    add_background(bundle, np.full((rows, DIM), fill), {"1": 0.1}, dtype)
    meta = read_manifest(bundle)
    meta["open_set"]["background"] = declared
    meta["init"]["arrays"]["open_set_background"] = [declared, DIM]
    write_manifest(bundle, meta)


def _pickled_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, head_weight=np.array([{"evil": 1}], dtype=object), head_bias=np.zeros(()))
    return buffer.getvalue()


@pytest.mark.parametrize("fault", BUNDLE_FAULTS)
def test_a_broken_bundle_is_refused_naming_the_fault(fault, bundle):
    damage, culprit = BUNDLE_FAULTS[fault]
    damage(bundle)
    fails_cleanly(["bundle", "verify", str(bundle)], culprit)


def test_a_missing_bundle_is_named(tmp_path):
    fails_cleanly(["bundle", "verify", str(tmp_path / "nowhere.mtlb")], "nowhere.mtlb does not exist")


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name, which is the point
        for name, data in entries:
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


ZIP_FAULTS = {
    "absolute-path": (lambda m: m + [("/tmp/evil.txt", b"x")], "unsafe file name '/tmp/evil.txt'"),
    "dot-dot-path": (lambda m: m + [("../evil.txt", b"x")], "unsafe file name '../evil.txt'"),
    "nested-dot-dot": (lambda m: m + [("a/../../evil.txt", b"x")], "unsafe file name"),
    "backslash-path": (lambda m: m + [("..\\evil.txt", b"x")], "unsafe file name"),
    "symlink": (lambda m: m + [(_symlink("link"), b"/etc/passwd")], "member link is a symbolic link"),
    "duplicate-name": (lambda m: m + [m[1]], "duplicate member embed.onnx"),
    "zip-bomb": (lambda m: m + [("pad.bin", bytes(64 << 20))], "refusing a possible zip bomb"),
    "not-a-zip": (lambda m: None, "not a valid .mtlb zip"),
}


@pytest.mark.parametrize("fault", ZIP_FAULTS)
def test_an_unsafe_mtlb_is_refused_before_anything_is_decompressed(fault, bundle, tmp_path, monkeypatch):
    names = ["manifest.json", "embed.onnx", "adapt_step.onnx", "predict.onnx", "init.npz"]
    members = [(name, (bundle / name).read_bytes()) for name in names]
    change, culprit = ZIP_FAULTS[fault]
    entries = change(members)
    path = tmp_path / "bad.mtlb"
    path.write_bytes(b"PK\x03\x04 not really" if entries is None else _zip(entries))
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or pytest.fail("decompressed"))
    before = sorted(p.name for p in tmp_path.iterdir())
    fails_cleanly(["bundle", "verify", str(path)], culprit)
    assert opened == [] and sorted(p.name for p in tmp_path.iterdir()) == before  # nothing read, nothing extracted


def test_verification_happens_before_any_graph_reaches_onnxruntime(bundle, monkeypatch):
    import mtl.device_runtime.bundle as bundle_module

    sessions = []
    real = bundle_module.ort.InferenceSession
    monkeypatch.setattr(bundle_module.ort, "InferenceSession", lambda *a, **k: sessions.append(1) or real(*a, **k))
    _flip(bundle, "predict.onnx", 0.5)  # the LAST graph: the first two must not have been loaded either
    fails_cleanly(["bundle", "verify", str(bundle)], "predict.onnx: sha256")
    assert sessions == []
    write_bundle(bundle)
    assert runner.invoke(app, ["bundle", "verify", str(bundle)]).exit_code == 0 and len(sessions) == 4
