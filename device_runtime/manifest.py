"""The bundle manifest (`manifest.json`, schema `mtl-bundle/1`, see docs/bundle.md): parsing and checks.

Every check names the key at fault, so a broken export says exactly what to fix. The graph
interfaces of `adapt_step` and `predict` are fixed by the schema; `embed` has one input and one output.
Every number has a range (`LIMITS`): a bundle comes from anywhere, and a value that passes here must not
crash, exhaust memory or run forever later (an input size of 10**20, 10**9 adaptation steps).
"""

from __future__ import annotations

import math
import re
from typing import Any

from mtl.device_runtime import jsonio
from mtl.device_runtime.errors import BundleError, ConfigError
from mtl.device_runtime.preprocess import InputSpec

SCHEMA = "mtl-bundle/1"
MANIFEST = "manifest.json"
HEAD_TYPES = ("linear", "cosine")
HEAD_INITS = ("learned", "proto", "zero")
# The operator domains a bundle's graphs may use: standard ONNX (and ONNX-ML), which stock onnxruntime runs
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8", "bool")
GRAPH_IO = {  # graph → (input names, output names); None: any single name
    "embed": (None, None),
    "adapt_step": (("weight", "bias", "features", "labels", "lr_weight", "lr_bias"),
                   ("new_weight", "new_bias", "loss")),
    "predict": (("weight", "bias", "features"), ("probabilities",)),
}
# (lowest, highest) allowed value of each number, by its dotted key
LIMITS: dict[str, tuple[float, float]] = {
    "input.size": (8, 1024),  # pixels a side: a 1024² RGB float batch of 8 is already 100 MB
    "input.mean": (-100.0, 100.0),
    "input.std": (1e-4, 1e4),
    "feature_dim": (1, 1 << 16),
    "adapt.steps": (0, 1000),
    "adapt.lr": (1e-12, 1e3),
    "opset": (7, 30),
    "shape dimension": (0, 1 << 20),
}
MAX_FILES = 16  # a bundle holds 4 files
MAX_NAME = 255
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KINDS = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
          "dict": "an object", "list": "a list"}


def _is(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, {"bool": bool, "str": str, "dict": dict, "list": list}[kind])


def need(obj: dict, key: str, kind: str, where: str) -> Any:
    """`obj[key]`, which must exist and be of `kind`; `where` is the dotted path of `obj` for messages."""
    path = f"{where}.{key}" if where else key
    if key not in obj:
        raise BundleError(f"{MANIFEST}: missing key {path!r}")
    value = obj[key]
    if not _is(value, kind):
        raise BundleError(f"{MANIFEST}: {path} must be {_KINDS[kind]}, got {type(value).__name__} {value!r:.60}")
    return value


def in_range(value: int | float, key: str, where: str = MANIFEST, shown: str | None = None) -> int | float:
    """`value` if it lies within `LIMITS[key]`, else `BundleError` naming `shown` (default `key`) and the range."""
    low, high = LIMITS[key]
    if not low <= value <= high:
        raise BundleError(f"{where}: {shown or key} must be between {low:g} and {high:g}, got {value!r:.40}")
    return value


def check_member_name(name: str, where: str) -> None:
    """A bundle file name must stay inside the bundle: relative, no '..', no backslash or drive."""
    parts = name.split("/")
    if (not name or len(name) > MAX_NAME or name.startswith("/") or "\\" in name or ":" in name
            or any(not c.isprintable() for c in name)
            or any(p in ("", ".", "..") for p in parts)):
        raise BundleError(f"{where}: unsafe file name {name!r:.80} (absolute, '..' or not a plain relative path)")


def parse_manifest(data: bytes) -> dict:
    """`manifest.json` bytes → the checked manifest dict."""
    manifest = jsonio.loads(data, MANIFEST, BundleError)
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} must hold a JSON object, got {type(manifest).__name__}")
    check_manifest(manifest)
    return manifest


def check_manifest(m: dict) -> None:
    schema = need(m, "schema", "str", "")
    if schema != SCHEMA:
        raise BundleError(f"{MANIFEST}: unsupported schema {schema!r:.80}; this runtime reads {SCHEMA!r}")
    need(m, "producer", "dict", "")
    input_spec(m)
    in_range(need(m, "feature_dim", "int", ""), "feature_dim")
    head = need(m, "head", "dict", "")
    _choice(head, "type", HEAD_TYPES, "head")
    _choice(head, "init", HEAD_INITS, "head")
    adapt = need(m, "adapt", "dict", "")
    in_range(need(adapt, "steps", "int", "adapt"), "adapt.steps")
    in_range(need(adapt, "lr", "number", "adapt"), "adapt.lr")
    need(adapt, "learned_lr", "bool", "adapt")
    if "batch_statistics" in m:
        need(m, "batch_statistics", "bool", "")
    if "quantization" in m:  # informative: how embed.onnx was quantized and how close it stayed
        need(m, "quantization", "dict", "")
    in_range(need(m, "opset", "int", ""), "opset")
    _check_graphs(m)
    _check_init(m)
    _check_files(m)


def input_spec(m: dict) -> InputSpec:
    """The `input` section as an `InputSpec` (the training preprocessing)."""
    spec = need(m, "input", "dict", "")
    for key, kind in (("size", "int"), ("channels", "int"), ("mean", "list"), ("std", "list"),
                      ("invert", "bool"), ("resize", "str")):
        need(spec, key, kind, "input")
    in_range(spec["size"], "input.size")
    if spec["channels"] not in (1, 3):
        raise BundleError(f"{MANIFEST}: input: image channels must be 1 or 3, got {spec['channels']!r:.40}")
    for key in ("mean", "std"):
        values = spec[key]
        if len(values) != spec["channels"] or not all(_is(v, "number") for v in values):
            raise BundleError(f"{MANIFEST}: input.{key} must be a list of numbers, one per channel "
                              f"({spec['channels']}), got {values!r:.60}")
        for v in values:
            in_range(v, f"input.{key}")
    try:
        return InputSpec.from_dict(spec)
    except ConfigError as exc:
        raise BundleError(f"{MANIFEST}: input: {exc}") from None


def _choice(obj: dict, key: str, choices: tuple[str, ...], where: str) -> str:
    value = need(obj, key, "str", where)
    if value not in choices:
        raise BundleError(f"{MANIFEST}: {where}.{key} must be one of {', '.join(choices)}, got {value!r:.60}")
    return value


def _check_graphs(m: dict) -> None:
    graphs = need(m, "graphs", "dict", "")
    unknown = sorted(set(graphs) - set(GRAPH_IO))
    if unknown:
        raise BundleError(f"{MANIFEST}: unknown graph(s) {unknown!r:.80} in graphs; {SCHEMA} has {list(GRAPH_IO)}")
    for name, (inputs, outputs) in GRAPH_IO.items():
        graph = need(graphs, name, "dict", "graphs")
        check_member_name(need(graph, "file", "str", f"graphs.{name}"), f"{MANIFEST}: graphs.{name}.file")
        for side, expected in (("inputs", inputs), ("outputs", outputs)):
            names = _io_names(graph, side, f"graphs.{name}")
            if expected is None and len(names) != 1:
                raise BundleError(f"{MANIFEST}: graphs.{name}.{side} must list exactly one tensor, got {names!r:.80}")
            if expected is not None and sorted(names) != sorted(expected):
                raise BundleError(f"{MANIFEST}: graphs.{name}.{side} must be {list(expected)}, got {names!r:.80}")
    spec, dim = input_spec(m), m["feature_dim"]
    _check_shape(graphs["embed"]["inputs"][0], ("B", spec.channels, spec.size, spec.size), "graphs.embed.inputs")
    _check_shape(graphs["embed"]["outputs"][0], ("B", dim), "graphs.embed.outputs")


def _io_names(graph: dict, side: str, where: str) -> list[str]:
    names = []
    for i, entry in enumerate(need(graph, side, "list", where)):
        at = f"{where}.{side}[{i}]"
        if not isinstance(entry, dict):
            raise BundleError(f"{MANIFEST}: {at} must be an object, got {type(entry).__name__}")
        names.append(need(entry, "name", "str", at))
        shape = need(entry, "shape", "list", at)
        if len(shape) > 8 or not all(_is(d, "int") or (_is(d, "str") and 0 < len(d) <= 64) for d in shape):
            raise BundleError(f"{MANIFEST}: {at}.shape must hold up to 8 integers or axis names, got {shape!r:.60}")
        for d in shape:
            if _is(d, "int"):
                in_range(d, "shape dimension", shown=f"{at}.shape")
        if need(entry, "dtype", "str", at) not in DTYPES:
            raise BundleError(f"{MANIFEST}: {at}.dtype must be one of {', '.join(DTYPES)}, got {entry['dtype']!r:.40}")
    return names


def _check_shape(entry: dict, expected: tuple[int | str, ...], where: str) -> None:
    """Fixed dims must agree with the input spec and feature_dim; named (dynamic) dims agree with anything."""
    shape = entry["shape"]
    if len(shape) != len(expected) or any(isinstance(a, int) and isinstance(e, int) and a != e
                                          for a, e in zip(shape, expected, strict=True)):
        raise BundleError(f"{MANIFEST}: {where} shape {shape} does not fit {list(expected)} (input / feature_dim)")


def expected_arrays(m: dict) -> dict[str, list[int]]:
    """The arrays `init.npz` must hold for the manifest's head rule and step sizes, with their shapes."""
    dim, arrays = m["feature_dim"], {}
    if m["head"]["init"] == "learned":
        arrays.update(head_weight=[dim], head_bias=[])
    if m["adapt"]["learned_lr"]:
        arrays.update(lr_weight=[1, dim], lr_bias=[1])
    return arrays


def _check_init(m: dict) -> None:
    init = need(m, "init", "dict", "")
    check_member_name(need(init, "file", "str", "init"), f"{MANIFEST}: init.file")
    arrays = need(init, "arrays", "dict", "init")
    if len(arrays) > MAX_FILES:
        raise BundleError(f"{MANIFEST}: init.arrays lists {len(arrays)} arrays; a bundle has at most {MAX_FILES}")
    for name, shape in arrays.items():
        if not isinstance(shape, list) or len(shape) > 8 or not all(_is(d, "int") and d >= 0 for d in shape):
            raise BundleError(f"{MANIFEST}: init.arrays.{name} must be a shape (list of integers), got {shape!r:.60}")
        for d in shape:
            in_range(d, "shape dimension", shown=f"init.arrays.{name}")
    for name, shape in expected_arrays(m).items():
        if name not in arrays:
            raise BundleError(f"{MANIFEST}: missing key 'init.arrays.{name}' (needed by head.init / "
                              "adapt.learned_lr)")
        if arrays[name] != shape:
            raise BundleError(f"{MANIFEST}: init.arrays.{name} must have shape {shape}, got {arrays[name]}")


def _check_files(m: dict) -> None:
    files = need(m, "files", "dict", "")
    if len(files) > MAX_FILES:
        raise BundleError(f"{MANIFEST}: files lists {len(files)} files; a bundle has at most {MAX_FILES}")
    for name, digest in files.items():
        check_member_name(name, f"{MANIFEST}: files")
        if name == MANIFEST:
            raise BundleError(f"{MANIFEST}: files must not list {MANIFEST} itself")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise BundleError(f"{MANIFEST}: files.{name} must be a lower-case sha256 hex digest, got {digest!r:.70}")
    needed = [g["file"] for g in m["graphs"].values()] + [m["init"]["file"]]
    for name in needed:
        if name not in files:
            raise BundleError(f"{MANIFEST}: files has no sha256 for {name!r}")
