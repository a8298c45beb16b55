"""Tiny REAL bundles for the device tests, built with the `onnx` package (never torch).

embed: Flatten + MatMul by a fixed random matrix; init_head: the manifest's rule (learned vector, class means,
zeros) written in ONNX ops; adapt_step: one exact first-order SGD step of a linear softmax-cross-entropy head;
predict: softmax(f·Wᵀ + b). N, M and B are dynamic. An independent implementation of the schema, so the device
runtime is tested against something other than the exporter it shares code with.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE, CHANNELS, DIM, OPSET = 16, 1, 8, 18
FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mtl-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _io(name: str, dtype: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def projection(seed: int = 0) -> np.ndarray:
    """The embed matrix (C·H·W, D)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((CHANNELS * SIZE * SIZE, DIM)) / 6.0).astype(np.float32)


def embed_graph(proj: np.ndarray, input_name: str = "images") -> bytes:
    nodes = [helper.make_node("Flatten", [input_name], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "proj"], ["features"])]
    graph = helper.make_graph(nodes, "embed", [_io(input_name, FLOAT, ["B", CHANNELS, SIZE, SIZE])],
                              [_io("features", FLOAT, ["B", DIM])], [numpy_helper.from_array(proj, "proj")])
    return _model(graph)


def _head_logits() -> list[onnx.NodeProto]:
    return [helper.make_node("Transpose", ["weight"], ["weight_t"], perm=[1, 0]),
            helper.make_node("MatMul", ["features", "weight_t"], ["scores"]),
            helper.make_node("Add", ["scores", "bias"], ["logits"])]


def adapt_step_graph(loss_name: str = "loss") -> bytes:
    """dW = (softmax − onehot)ᵀ·f / M, db = mean(softmax − onehot), W' = W − lr_w·dW, b' = b − lr_b·db."""
    mk = helper.make_node
    nodes = _head_logits() + [
        mk("Softmax", ["logits"], ["probs"], axis=1),
        mk("LogSoftmax", ["logits"], ["logp"], axis=1),
        mk("Shape", ["weight"], ["n"], start=0, end=1),
        mk("OneHot", ["labels", "n", "onehot_values"], ["onehot"], axis=-1),
        mk("Sub", ["probs", "onehot"], ["g"]),
        mk("Shape", ["features"], ["m"], start=0, end=1),
        mk("Cast", ["m"], ["m_f"], to=FLOAT),
        mk("Transpose", ["g"], ["g_t"], perm=[1, 0]),
        mk("MatMul", ["g_t", "features"], ["g_f"]),
        mk("Div", ["g_f", "m_f"], ["d_weight"]),
        mk("ReduceMean", ["g", "axis0"], ["d_bias"], keepdims=0),
        mk("Mul", ["lr_weight", "d_weight"], ["step_w"]),
        mk("Sub", ["weight", "step_w"], ["new_weight"]),
        mk("Mul", ["lr_bias", "d_bias"], ["step_b"]),
        mk("Sub", ["bias", "step_b"], ["new_bias"]),
        mk("Mul", ["onehot", "logp"], ["picked"]),
        mk("ReduceSum", ["picked", "axis1"], ["log_lik"], keepdims=0),
        mk("ReduceMean", ["log_lik"], ["mean_log_lik"], keepdims=0),
        mk("Neg", ["mean_log_lik"], [loss_name]),
    ]
    consts = [numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "onehot_values"),
              numpy_helper.from_array(np.array([0], np.int64), "axis0"),
              numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    inputs = [_io("weight", FLOAT, ["N", DIM]), _io("bias", FLOAT, ["N"]), _io("features", FLOAT, ["M", DIM]),
              _io("labels", INT64, ["M"]), _io("lr_weight", FLOAT, [1, DIM]), _io("lr_bias", FLOAT, [1])]
    outputs = [_io("new_weight", FLOAT, ["N", DIM]), _io("new_bias", FLOAT, ["N"]), _io(loss_name, FLOAT, [])]
    return _model(helper.make_graph(nodes, "adapt_step", inputs, outputs, consts))


def predict_graph() -> bytes:
    nodes = _head_logits() + [helper.make_node("LogSoftmax", ["logits"], ["log_probabilities"], axis=1)]
    inputs = [_io("weight", FLOAT, ["N", DIM]), _io("bias", FLOAT, ["N"]), _io("features", FLOAT, ["B", DIM])]
    return _model(helper.make_graph(nodes, "predict", inputs, [_io("log_probabilities", FLOAT, ["B", "N"])]))


def learned_head(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The shared class vector (D,) and bias () of the `learned` rule, baked into init_head.onnx."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(DIM)).astype(np.float32), np.array(0.05, np.float32)


def init_arrays(learned_lr: bool, seed: int = 1) -> dict[str, np.ndarray]:
    """init.npz: meta-learned step sizes, when the bundle has them."""
    rng = np.random.default_rng(seed + 1)
    if not learned_lr:
        return {}
    return {"lr_weight": rng.uniform(0.2, 0.8, (1, DIM)).astype(np.float32), "lr_bias": np.array([0.3], np.float32)}


def init_head_graph(head_type: str = "linear", head_init: str = "learned") -> bytes:
    """(features (M, D), onehot (M, N)) → (weight (N, D), bias (N,)) by the rule."""
    mk = helper.make_node
    nodes = [mk("Shape", ["onehot"], ["n"], start=1, end=2), mk("Concat", ["n", "dim"], ["n_by_d"], axis=0)]
    consts = [numpy_helper.from_array(np.array([DIM], np.int64), "dim")]
    if head_init == "learned":
        weight, bias = learned_head()
        consts += [numpy_helper.from_array(weight[None], "w0"), numpy_helper.from_array(bias.reshape(1), "b0")]
        nodes += [mk("Expand", ["w0", "n_by_d"], ["weight"]), mk("Expand", ["b0", "n"], ["bias"])]
    elif head_init == "zero":
        zero = helper.make_tensor("zero", FLOAT, [1], [0.0])
        nodes += [mk("ConstantOfShape", ["n_by_d"], ["weight"], value=zero),
                  mk("ConstantOfShape", ["n"], ["bias"], value=zero)]
    else:
        consts += [numpy_helper.from_array(np.array([0], np.int64), "axis0"),
                   numpy_helper.from_array(np.array([1], np.int64), "axis1"),
                   numpy_helper.from_array(np.array(2.0, np.float32), "two"),
                   numpy_helper.from_array(np.array(0.0, np.float32), "nought")]
        nodes += [mk("Transpose", ["onehot"], ["onehot_t"], perm=[1, 0]),
                  mk("MatMul", ["onehot_t", "features"], ["sums"]),
                  mk("ReduceSum", ["onehot", "axis0"], ["counts"], keepdims=0),
                  mk("Unsqueeze", ["counts", "axis1"], ["counts_col"]),
                  mk("Div", ["sums", "counts_col"], ["means"])]
        if head_type == "cosine":
            nodes += [mk("Identity", ["means"], ["weight"]), mk("Mul", ["counts", "nought"], ["bias"])]
        else:
            nodes += [mk("Mul", ["means", "two"], ["weight"]), mk("Mul", ["means", "means"], ["squares"]),
                      mk("ReduceSum", ["squares", "axis1"], ["norms"], keepdims=0), mk("Neg", ["norms"], ["bias"])]
    inputs = [_io("features", FLOAT, ["M", DIM]), _io("onehot", FLOAT, ["M", "N"])]
    outputs = [_io("weight", FLOAT, ["N", DIM]), _io("bias", FLOAT, ["N"])]
    return _model(helper.make_graph(nodes, "init_head", inputs, outputs, consts))


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _tensor(name: str, shape: list, dtype: str = "float32") -> dict:
    return {"name": name, "shape": shape, "dtype": dtype}


def manifest(files: dict[str, bytes], arrays: dict[str, np.ndarray], *, head_type: str, head_init: str,
             learned_lr: bool, steps: int, lr: float, invert: bool) -> dict:
    head = [_tensor("weight", ["N", DIM]), _tensor("bias", ["N"])]
    return {
        "schema": "mtl-bundle/3",
        "producer": {"mtl": "0.1.0", "onnx": onnx.__version__, "algorithm": "test"},
        "input": {"size": SIZE, "channels": CHANNELS, "mean": [0.5], "std": [0.25], "invert": invert,
                  "resize": "bilinear"},
        "feature_dim": DIM,
        "head": {"type": head_type, "init": head_init},
        "adapt": {"steps": steps, "lr": lr, "learned_lr": learned_lr},
        "opset": OPSET,
        "graphs": {
            "embed": {"file": "embed.onnx", "inputs": [_tensor("images", ["B", CHANNELS, SIZE, SIZE])],
                      "outputs": [_tensor("features", ["B", DIM])]},
            "init_head": {"file": "init_head.onnx", "inputs": [_tensor("features", ["M", DIM]),
                                                              _tensor("onehot", ["M", "N"])], "outputs": head},
            "adapt_step": {"file": "adapt_step.onnx",
                           "inputs": head + [_tensor("features", ["M", DIM]), _tensor("labels", ["M"], "int64"),
                                             _tensor("lr_weight", [1, DIM]), _tensor("lr_bias", [1])],
                           "outputs": [_tensor("new_weight", ["N", DIM]), _tensor("new_bias", ["N"]),
                                       _tensor("loss", [])]},
            "predict": {"file": "predict.onnx", "inputs": head + [_tensor("features", ["B", DIM])],
                        "outputs": [_tensor("log_probabilities", ["B", "N"])]},
        },
        "init": {"file": "init.npz", "arrays": {k: list(v.shape) for k, v in arrays.items()}},
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }


def write_bundle(path: Path, *, head_type: str = "linear", head_init: str = "learned", learned_lr: bool = False,
                 steps: int = 5, lr: float = 0.1, invert: bool = False) -> Path:
    """Write a bundle directory at `path` and return it."""
    arrays = init_arrays(learned_lr)
    files = {"embed.onnx": embed_graph(projection()), "init_head.onnx": init_head_graph(head_type, head_init),
             "adapt_step.onnx": adapt_step_graph(), "predict.onnx": predict_graph(), "init.npz": npz_bytes(arrays)}
    meta = manifest(files, arrays, head_type=head_type, head_init=head_init, learned_lr=learned_lr, steps=steps,
                    lr=lr, invert=invert)
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    write_manifest(path, meta)
    return path


def add_background(path: Path, background: np.ndarray, thresholds: dict[str, float], dtype=np.float32) -> Path:
    """Give the bundle directory at `path` a calibrated open set against `background` (C, D): the rows in
    init.npz, their count and the thresholds in the manifest (what `mtl calibrate` + `mtl export` ship)."""
    from mtl.device_runtime.schema import BACKGROUND

    meta = read_manifest(path)
    with np.load(path / "init.npz") as npz:
        arrays = {**{k: npz[k] for k in npz.files}, BACKGROUND: np.asarray(background, dtype)}
    replace_file(path, "init.npz", npz_bytes(arrays))
    meta = {**read_manifest(path), "open_set": {"known_loss": 0.05, "thresholds": thresholds, "ways": 5,
                                                "episodes": 10, "background": len(background)}}
    meta["init"]["arrays"] = {k: list(v.shape) for k, v in arrays.items()}
    write_manifest(path, meta)
    return path


def read_manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def write_manifest(path: Path, meta: dict) -> None:
    (path / "manifest.json").write_text(json.dumps(meta, indent=2))


def replace_file(path: Path, name: str, data: bytes) -> None:
    """Replace one file and record its new sha256, so only the content itself is wrong."""
    (path / name).write_bytes(data)
    meta = read_manifest(path)
    meta["files"][name] = hashlib.sha256(data).hexdigest()
    write_manifest(path, meta)


def glyph(label: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A separable synthetic grey image (size, size) uint8: a bright block whose place depends on the class."""
    image = rng.integers(0, 40, (size, size)).astype(np.uint8)
    row, col = divmod(label % 4, 2)
    half = size // 2
    image[row * half + 1:(row + 1) * half - 1, col * half + 1:(col + 1) * half - 1] = 230
    return image


def write_support(root: Path, classes: list[str], shots: int = 3, seed: int = 0) -> Path:
    """One sub-folder of PNG glyphs per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(shots):
            Image.fromarray(glyph(label, rng)).save(root / name / f"{i}.png")
    return root


def key_paths(obj: object, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path of a nested JSON value (dict keys and list indices), the empty path first."""
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield from key_paths(value, (*prefix, key))
