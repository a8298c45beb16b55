"""Bundles made by an attacker (issue 13): every one is refused at verify, in one line, before a graph reaches
onnxruntime, or adapts and predicts with finite numbers. None reads a file outside itself, none reads without
a bound, none runs forever.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from mtl.cli.app import app
from tests.bad_inputs.helpers import CLASSES, adapt_args, fails_cleanly, runner
from tests.device_runtime.bundle_factory import (
    CHANNELS,
    DIM,
    SIZE,
    embed_graph,
    projection,
    read_manifest,
    replace_file,
    write_support,
)

REPO = Path(__file__).resolve().parents[2]
BAIT = b"the bytes of ~/.ssh/id_ed25519"


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def _as_external(tensor: onnx.TensorProto, location: str) -> onnx.TensorProto:
    """`tensor` rewritten to keep its data in `location` (ONNX external data), as an attacker would write it."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(4 * int(np.prod(tensor.dims))))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def external_initializer(location: str) -> bytes:
    """embed.onnx whose projection matrix is read from `location`, relative to the working directory."""
    model = onnx.load_from_string(embed_graph(projection()))
    _as_external(model.graph.initializer[0], location)
    return model.SerializeToString()


def external_constant_in_a_subgraph(location: str) -> bytes:
    """embed.onnx whose projection comes from a Constant node inside an If branch: the external tensor hides two
    levels down (a node attribute of a subgraph)."""
    proj = _as_external(numpy_helper.from_array(projection(), "proj_c"), location)
    branch = helper.make_graph([helper.make_node("Constant", [], ["proj_b"], value=proj)], "branch", [],
                               [helper.make_tensor_value_info("proj_b", onnx.TensorProto.FLOAT, [SIZE * SIZE, DIM])])
    nodes = [helper.make_node("Constant", [], ["yes"], value=numpy_helper.from_array(np.array(True), "yes_c")),
             helper.make_node("If", ["yes"], ["proj"], then_branch=branch, else_branch=branch),
             helper.make_node("Flatten", ["images"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "proj"], ["features"])]
    graph = helper.make_graph(nodes, "embed", [helper.make_tensor_value_info(
        "images", onnx.TensorProto.FLOAT, ["B", CHANNELS, SIZE, SIZE])],
        [helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["B", DIM])])
    return _model(graph)


def contrib_op_graph() -> bytes:
    """embed.onnx with an operator of onnxruntime's contrib domain: not standard ONNX."""
    model = onnx.load_from_string(embed_graph(projection()))
    model.graph.node[0].domain = "com.microsoft"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model.SerializeToString()


@pytest.fixture
def bait_dir(tmp_path, monkeypatch):
    """A working directory holding a secret the size of the projection matrix, where a bundle points."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.bin").write_bytes(projection().tobytes())
    (home / "notes.txt").write_bytes(BAIT)
    monkeypatch.chdir(home)
    return home


@pytest.mark.parametrize("graph", [external_initializer, external_constant_in_a_subgraph])
def test_a_graph_with_external_data_is_refused_at_verify_and_at_load(graph, bundle, bait_dir, tmp_path):
    replace_file(bundle, "embed.onnx", graph("secret.bin"))  # the manifest's sha256 updated to match
    line = fails_cleanly(["bundle", "verify", str(bundle)], "embed.onnx: tensor")
    assert "outside the file (ONNX external data)" in line
    support = write_support(tmp_path / "support", CLASSES)
    fails_cleanly(adapt_args(bundle, support, tmp_path / "adapted"), "external data")
    assert not (tmp_path / "adapted").exists()


def test_an_operator_outside_standard_onnx_is_refused(bundle):
    replace_file(bundle, "embed.onnx", contrib_op_graph())
    fails_cleanly(["bundle", "verify", str(bundle)], "non-standard domain(s) com.microsoft")


def test_loading_adapting_and_predicting_open_no_file_outside_the_inputs(bundle, bait_dir, tmp_path, monkeypatch):
    """Every file the device runtime opens, through Python, lies in the bundle, the support folder, the output
    or the images to classify (onnxruntime gets bytes, and a graph that refers outside itself is refused)."""
    import builtins
    import io

    from mtl.device_runtime import Adapter, Bundle

    support = write_support(tmp_path / "support", CLASSES)
    opened: list[Path] = []
    real_open, real_os_open, real_io_open = builtins.open, os.open, io.open

    def record(path: object) -> None:
        if isinstance(path, str | bytes | os.PathLike):
            opened.append(Path(os.fsdecode(path)).resolve())

    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (record(f), real_open(f, *a, **k))[1])
    monkeypatch.setattr(io, "open", lambda f, *a, **k: (record(f), real_io_open(f, *a, **k))[1])
    monkeypatch.setattr(os, "open", lambda f, *a, **k: (record(f), real_os_open(f, *a, **k))[1])
    adapter = Adapter(Bundle.load(bundle))
    for name in CLASSES:
        adapter.add_examples(name, sorted((support / name).iterdir()))
    adapter.adapt()
    adapter.save(tmp_path / "adapted")
    Adapter.load(tmp_path / "adapted").predict([support / "star" / "0.png", support / "circle" / "1.png"])
    monkeypatch.undo()
    allowed = [p.resolve() for p in (bundle, support, tmp_path / "adapted", tmp_path)]
    outside = [p for p in opened if not any(p.is_relative_to(a) for a in allowed)]
    assert opened and not outside, outside
    assert not any(p.is_relative_to(bait_dir.resolve()) for p in opened)


# ---------------------------------------------------------------- unbounded reads
def test_a_device_file_as_bundle_is_refused_not_read_forever():
    fails_cleanly(["bundle", "verify", "/dev/zero"], "/dev/zero is not a regular file (a character device)")


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _in_time(args: list[str], seconds: float = 60):
    """`mtl args` in a subprocess with a deadline: a read that blocks fails the test instead of hanging it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "mtl", *args], capture_output=True, text=True, env=env,
                          timeout=seconds, cwd=REPO)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
def test_a_fifo_as_bundle_image_or_key_is_refused_without_blocking(bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES)
    fifo_bundle = _fifo(tmp_path / "pipe.mtlb")
    result = _in_time(["bundle", "verify", str(fifo_bundle)])
    assert result.returncode == 1 and "is not a regular file (a FIFO)" in result.stderr, result.stderr
    _fifo(support / "star" / "9.png")
    result = _in_time(adapt_args(bundle, support, tmp_path / "adapted"))
    assert result.returncode == 1 and "9.png is not a regular file (a FIFO)" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "adapted").exists()
    result = _in_time(["bundle", "verify", str(bundle), "--key", str(_fifo(tmp_path / "key.pub"))])
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr


def test_a_zip_listing_thousands_of_members_is_refused_from_its_directory_record(tmp_path):
    import zipfile

    path = tmp_path / "many.mtlb"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(2000):
            zf.writestr(f"m{i}", b"")
    fails_cleanly(["bundle", "verify", str(path)], "the zip lists 2000 members")


def test_a_bundle_larger_than_the_cap_is_refused_before_it_is_read(bundle, tmp_path, monkeypatch):
    import mtl.device_runtime.archive as archive
    from mtl.device_runtime.atomic import atomic_write_bytes
    from mtl.device_runtime.bundle import Bundle

    single = tmp_path / "b.mtlb"
    atomic_write_bytes(single, Bundle.load(bundle).to_zip_bytes())
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 1000)
    fails_cleanly(["bundle", "verify", str(single)], "more than the 1000 bytes a bundle may be")


# ---------------------------------------------------------------- hostile manifest values
def _raw_manifest(bundle: Path, key_path: list[str], raw_json: str) -> None:
    """Put `raw_json` (written as is: an integer of thousands of digits is not something json.dumps writes) at
    `key_path` of the manifest."""
    meta = read_manifest(bundle)
    target = meta
    for key in key_path[:-1]:
        target = target[key]
    target[key_path[-1]] = "@@HOSTILE@@"
    (bundle / "manifest.json").write_text(json.dumps(meta).replace('"@@HOSTILE@@"', raw_json))


HOSTILE_VALUES = {
    "int-5000-digits": (["feature_dim"], "9" * 5000, "an integer of 5000 digits"),
    "int-30-digits": (["adapt", "steps"], "1" + "0" * 29, "an integer of 30 digits"),
    "nested-100000": (["producer"], "[" * 100_000 + "]" * 100_000, "nested more than 32 levels deep"),
    "nan": (["adapt", "lr"], "NaN", "NaN is not a JSON number"),
    "infinity": (["input", "mean"], "[-Infinity]", "-Infinity is not a JSON number"),
    "float-overflow": (["adapt", "lr"], "1e999", "out of the float range"),
    "input-size-1e20": (["input", "size"], "100000000000000000000", "an integer of 21 digits"),
    "input-size-1e18": (["input", "size"], "1" + "0" * 18, "input.size must be between 8 and 1024"),
    "input-size-huge-ok-int": (["input", "size"], "4096", "input.size must be between 8 and 1024"),
    "steps-1e9": (["adapt", "steps"], "1000000000", "adapt.steps must be between 0 and 1000"),
    "lr-1e300": (["adapt", "lr"], "1e300", "adapt.lr must be between"),
    "feature-dim-1e9": (["feature_dim"], "1000000000", "feature_dim must be between 1 and 65536"),
    "opset-999": (["opset"], "999", "opset must be between 7 and 30"),
    "std-tiny": (["input", "std"], "[1e-30]", "input.std must be between"),
    "mean-huge": (["input", "mean"], "[1e30]", "input.mean must be between"),
    "channels-7": (["input", "channels"], "7", "image channels must be 1 or 3"),
    "mean-too-many": (["input", "mean"], "[0.5, 0.5, 0.5]", "one per channel"),
    "shape-dim-huge": (["graphs", "embed", "inputs", 0, "shape"], '["B", 1, 16, 100000000000]', "shape must be"),
    "shape-rank-50": (["graphs", "embed", "outputs", 0, "shape"], json.dumps(["B"] * 50), "up to 8 integers"),
    "files-thousands": (["files"], json.dumps({f"f{i}": "0" * 64 for i in range(1000)}), "lists 1000 files"),
    "file-name-newline": (["graphs", "embed", "file"], '"embed\\n.onnx"', "unsafe file name"),
    "file-name-long": (["graphs", "embed", "file"], json.dumps("e" * 5000), "unsafe file name"),
    "schema-1mb": (["schema"], json.dumps("x" * 900_000), "unsupported schema"),
}


@pytest.mark.parametrize("case", HOSTILE_VALUES)
def test_hostile_manifest_values_are_refused_at_verify_in_one_line(case, bundle, tmp_path):
    key_path, raw, culprit = HOSTILE_VALUES[case]
    _raw_manifest(bundle, key_path, raw)
    line = fails_cleanly(["bundle", "verify", str(bundle)], culprit)
    assert len(line) < 1200  # a 900 kB string in the manifest is not echoed back whole
    support = write_support(tmp_path / "support", CLASSES[:2])
    fails_cleanly(adapt_args(bundle, support, tmp_path / "adapted"), culprit)
    assert not (tmp_path / "adapted").exists()


def test_adapt_steps_beyond_the_cap_are_a_usage_error_not_a_run_forever(bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES[:2])
    fails_cleanly(adapt_args(bundle, support, tmp_path / "adapted", "--steps", "1000000000"),
                  "steps must be an integer from 0 to 1000", code=2)


# ---------------------------------------------------------------- the adapted state
@pytest.fixture
def adapted(bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES)
    out = tmp_path / "adapted"
    assert runner.invoke(app, adapt_args(bundle, support, out)).exit_code == 0
    return out, support


def _edit_state(out: Path, rehash: bool, **arrays: np.ndarray) -> None:
    with np.load(out / "state.npz") as npz:
        state = {k: npz[k] for k in npz.files}
    state.update(arrays)
    np.savez(out / "state.npz", **state)
    if rehash:
        meta = json.loads((out / "adapted.json").read_text())
        meta["state_sha256"] = hashlib.sha256((out / "state.npz").read_bytes()).hexdigest()
        (out / "adapted.json").write_text(json.dumps(meta))


def test_an_edited_adapted_state_is_refused_by_its_hash(adapted):
    out, support = adapted
    _edit_state(out, rehash=False, weight=np.full((3, DIM), 3e38, np.float32))
    fails_cleanly(["predict", str(out), str(support / "star" / "0.png"), "--json"],
                  "state.npz: sha256")


def test_weights_that_overflow_give_one_line_never_nan_json(adapted):
    out, support = adapted
    weight = np.where(np.arange(DIM) % 2, 3e38, -3e38).astype(np.float32)[None].repeat(3, 0)
    _edit_state(out, rehash=True, weight=weight)  # the hash forged too: the numbers themselves are caught
    result = runner.invoke(app, ["predict", str(out), str(support / "star" / "0.png"), "--json"])
    assert result.exit_code == 1 and "NaN" not in result.stdout and "Infinity" not in result.stdout
    fails_cleanly(["predict", str(out), str(support / "star" / "0.png"), "--json"],
                  "predict.onnx gave non-finite values")


def test_an_adapted_state_of_the_earlier_schema_says_to_adapt_again(adapted):
    out, support = adapted
    meta = json.loads((out / "adapted.json").read_text())
    meta["schema"] = "mtl-adapted/1"
    (out / "adapted.json").write_text(json.dumps(meta))
    fails_cleanly(["predict", str(out), str(support / "star" / "0.png")], "run mtl adapt again")


# ---------------------------------------------------------------- what verify says of signatures
def test_verify_says_whether_the_signature_was_checked(bundle, tmp_path):
    result = runner.invoke(app, ["bundle", "verify", str(bundle)])
    assert result.exit_code == 0 and result.stdout.strip().endswith("; not signed"), result.stdout
    (bundle / "manifest.sig").write_bytes(b"\0" * 64)
    result = runner.invoke(app, ["bundle", "verify", str(bundle)])
    assert result.exit_code == 0 and "signature NOT checked" in result.stdout, result.stdout

