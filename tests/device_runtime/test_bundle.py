import hashlib

import numpy as np
import pytest

import mtl.device_runtime.bundle as bundle_module
from mtl.device_runtime import Bundle, BundleError
from mtl.device_runtime.preprocess import InputSpec
from tests.device_runtime.bundle_factory import (
    DIM,
    adapt_step_graph,
    embed_graph,
    npz_bytes,
    projection,
    read_manifest,
    replace_file,
    write_manifest,
)
from tests.tolerance import assert_float_close

HASHED = ("embed.onnx", "init_head.onnx", "adapt_step.onnx", "predict.onnx", "init.npz")


@pytest.fixture
def no_sessions(monkeypatch):
    """Fail the test if a graph reaches onnxruntime: bad bundles must be refused before that."""

    def refuse(*args, **kwargs):
        raise AssertionError("an onnxruntime session was created for a bad bundle")

    monkeypatch.setattr(bundle_module.ort, "InferenceSession", refuse)


def test_a_bundle_loads_with_its_manifest_and_input_spec(bundle_dir):
    bundle = Bundle.load(bundle_dir)
    assert bundle.manifest.schema == "mtl-bundle/3"
    assert bundle.input_spec == InputSpec(size=16, channels=1, mean=(0.5,), std=(0.25,), invert=False)
    assert set(bundle.files) == set(HASHED)
    assert bundle.graphs["predict"].op_types["LogSoftmax"] == 1


def test_embed_is_the_graph_batched_in_any_batch_size(bundle_dir):
    bundle = Bundle.load(bundle_dir)
    images = np.random.default_rng(0).standard_normal((10, 1, 16, 16)).astype(np.float32)
    reference = images.reshape(10, -1) @ projection()
    assert_float_close(bundle.embed(images), reference)
    assert np.array_equal(bundle.embed(images, batch_size=3), bundle.embed(images, batch_size=64))
    assert bundle.embed(images[:0]).shape == (0, DIM)


def test_embed_refuses_images_of_the_wrong_shape_or_type(bundle_dir):
    bundle = Bundle.load(bundle_dir)
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        bundle.embed(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="normalised float"):
        bundle.embed(np.zeros((2, 1, 16, 16), np.uint8))


def test_directory_and_mtlb_round_trip_to_the_same_bundle(bundle_dir, tmp_path):
    original = Bundle.load(bundle_dir)
    original.save(tmp_path / "one.mtlb", single_file=True)
    from_zip = Bundle.load(tmp_path / "one.mtlb")
    from_zip.save(tmp_path / "again", single_file=False)
    again = Bundle.load(tmp_path / "again")
    assert again.files == original.files and again.manifest == original.manifest
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (bundle_dir / "manifest.json").read_bytes()
    assert original.sha256 == from_zip.sha256 == again.sha256  # deterministic zips
    images = np.ones((2, 1, 16, 16), np.float32)
    assert np.array_equal(again.embed(images), original.embed(images))
    assert Bundle.from_bytes((tmp_path / "one.mtlb").read_bytes()).files == original.files


def test_saving_over_a_bundle_directory_replaces_it(bundle_dir, tmp_path):
    bundle = Bundle.load(bundle_dir)
    bundle.save(tmp_path / "copy")
    (tmp_path / "copy" / "stale.txt").write_text("old")
    bundle.save(tmp_path / "copy")
    assert not (tmp_path / "copy" / "stale.txt").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing"):
        bundle.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_missing_bundle_or_file_is_named(bundle_dir, tmp_path, no_sessions):
    with pytest.raises(BundleError, match="does not exist"):
        Bundle.load(tmp_path / "nowhere")
    (bundle_dir / "predict.onnx").unlink()
    with pytest.raises(BundleError, match="missing file predict.onnx"):
        Bundle.load(bundle_dir)


@pytest.mark.parametrize("name", HASHED)
@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_one_flipped_byte_anywhere_is_a_sha_mismatch_naming_the_file(bundle_dir, no_sessions, name, where):
    path = bundle_dir / name
    data = bytearray(path.read_bytes())
    index = int(where * (len(data) - 1)) if where != -1 else len(data) - 1
    data[index] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{name}: sha256 .* does not match"):
        Bundle.load(bundle_dir)


def _set(meta: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        meta = meta[key]
    if value is KeyError:
        del meta[last]
    else:
        meta[last] = value


@pytest.mark.parametrize("path, value, message", [
    ("schema", "mtl-bundle/4", "unsupported schema 'mtl-bundle/4'"),
    ("schema", "mtl-bundle/2", "written by an earlier mtl (predict gives probabilities, not log-probabilities)"),
    ("schema", "mtl-bundle/1", "written by an earlier mtl (no init_head graph); export the checkpoint again"),
    ("schema", KeyError, "missing key 'schema'"),
    ("feature_dim", KeyError, "missing key 'feature_dim'"),
    ("input.size", KeyError, "missing key 'input.size'"),
    ("graphs.predict", KeyError, "missing key 'graphs.predict'"),
    ("graphs.embed.file", KeyError, "missing key 'graphs.embed.file'"),
    ("feature_dim", "8", "feature_dim must be an integer, got str"),
    ("adapt.steps", True, "adapt.steps must be an integer, got bool"),
    ("adapt.lr", "fast", "adapt.lr must be a number"),
    ("input.invert", "yes", "input.invert must be true or false"),
    ("input.mean", ["0.5"], "input.mean must be a list of numbers"),
    ("input.channels", 2, "input: image channels must be 1 or 3"),
    ("head.init", "magic", "head.init must be one of learned, proto, zero"),
    ("graphs.adapt_step.outputs", [], "graphs.adapt_step.outputs must be"),
    ("graphs.embed.file", "../outside.onnx", "unsafe file name '../outside.onnx'"),
    ("init.arrays.lr_weight", [1, 8], "init.arrays must be [] (adapt.learned_lr, open_set.background)"),
    ("files.embed.onnx", "ABC", "files.embed.onnx must be a lower-case sha256"),
    ("producer", "torch", "producer must be an object"),
    ("batch_statistics", "yes", "batch_statistics must be true or false"),
])
def test_a_bad_manifest_is_refused_naming_the_key(bundle_dir, no_sessions, path, value, message):
    meta = read_manifest(bundle_dir)
    if path.startswith("files."):
        meta["files"][path.removeprefix("files.")] = value
    else:
        _set(meta, path, value)
    write_manifest(bundle_dir, meta)
    with pytest.raises(BundleError, match="manifest.json") as error:
        Bundle.load(bundle_dir)
    assert message in str(error.value)


def test_a_manifest_that_is_not_json_is_named(bundle_dir, no_sessions):
    (bundle_dir / "manifest.json").write_text("{ not json")
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        Bundle.load(bundle_dir)


def test_an_onnx_file_that_is_not_onnx_is_named(bundle_dir, no_sessions):
    replace_file(bundle_dir, "predict.onnx", b"this is not an onnx model at all")
    with pytest.raises(BundleError, match="predict.onnx: not an ONNX model"):
        Bundle.load(bundle_dir)


def test_graph_inputs_that_do_not_match_the_manifest_are_named(bundle_dir, no_sessions):
    replace_file(bundle_dir, "embed.onnx", embed_graph(projection(), input_name="pixels"))
    with pytest.raises(BundleError, match=r"embed.onnx: graph inputs \['pixels'\] do not match .*\['images'\]"):
        Bundle.load(bundle_dir)


def test_graph_outputs_that_do_not_match_the_manifest_are_named(bundle_dir, no_sessions):
    replace_file(bundle_dir, "adapt_step.onnx", adapt_step_graph(loss_name="cost"))
    with pytest.raises(BundleError, match="adapt_step.onnx: graph outputs .*'cost'.* do not match"):
        Bundle.load(bundle_dir)


def test_a_dtype_that_does_not_match_the_manifest_is_named(bundle_dir, no_sessions):
    meta = read_manifest(bundle_dir)
    meta["graphs"]["adapt_step"]["inputs"][3]["dtype"] = "int32"
    write_manifest(bundle_dir, meta)
    with pytest.raises(BundleError, match=r"adapt_step.inputs 'labels' must be \['M'\] int64, got \['M'\] int32"):
        Bundle.load(bundle_dir)


def test_init_arrays_that_do_not_match_the_manifest_are_named(bundle_dir, no_sessions):
    replace_file(bundle_dir, "init.npz", npz_bytes({"head_weight": np.zeros(DIM, np.float32)}))
    with pytest.raises(BundleError, match=r"init.npz: arrays \['head_weight'\] do not match"):
        Bundle.load(bundle_dir)
    replace_file(bundle_dir, "init.npz", b"not a zip")
    with pytest.raises(BundleError, match="init.npz: not a readable .npz"):
        Bundle.load(bundle_dir)


def test_a_symlinked_file_in_a_bundle_directory_is_refused(bundle_dir, tmp_path, no_sessions):
    target = tmp_path / "elsewhere.npz"
    target.write_bytes((bundle_dir / "init.npz").read_bytes())
    (bundle_dir / "init.npz").unlink()
    (bundle_dir / "init.npz").symlink_to(target)
    with pytest.raises(BundleError, match="init.npz is a symbolic link"):
        Bundle.load(bundle_dir)


def test_a_graph_onnxruntime_rejects_is_named(bundle_dir):
    data = bytearray((bundle_dir / "predict.onnx").read_bytes())
    data = data.replace(b"Softmax", b"Softmix")  # parses as protobuf, but no such operator
    replace_file(bundle_dir, "predict.onnx", bytes(data))
    assert hashlib.sha256(bytes(data)).hexdigest() == read_manifest(bundle_dir)["files"]["predict.onnx"]
    with pytest.raises(BundleError, match="predict.onnx: onnxruntime cannot load it"):
        Bundle.load(bundle_dir)
