"""The bundle manifest (`manifest.json`, see docs/bundle.md) as a checked dataclass: `Manifest.parse` and
`Manifest.to_json`, the one reader and the one writer (the exporter builds a `Manifest` and writes it).

Every check names the key at fault, so a broken export says exactly what to fix. The graph interfaces are
fixed by the schema (`schema.graph_io`); every number has a range (`schema.LIMITS`): a bundle comes from
anywhere, and a value that passes here must not crash, exhaust memory or run forever later.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from mtl.device_runtime import jsonio
from mtl.device_runtime.calibration import KEYS as CALIBRATION_KEYS
from mtl.device_runtime.calibration import Temperature
from mtl.device_runtime.errors import BundleError, ConfigError
from mtl.device_runtime.preprocess import InputSpec
from mtl.device_runtime.schema import (
    CONTEXT_GRAPHS,
    DTYPES,
    GRAPH_NAMES,
    HEAD_INITS,
    HEAD_TYPES,
    LIMITS,
    MANIFEST,
    MAX_BACKGROUND,
    MAX_FILES,
    MAX_NAME,
    SCHEMA,
    STANDARD_DOMAINS,
    UPDATE_RULES,
    Context,
    TensorSpec,
    graph_io,
    init_arrays,
)

__all__ = ["HEAD_INITS", "HEAD_TYPES", "LIMITS", "MANIFEST", "SCHEMA", "STANDARD_DOMAINS", "Manifest",
           "check_member_name", "in_range"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_KINDS = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
          "dict": "an object", "list": "a list"}


@dataclass(frozen=True)
class Graph:
    """One graph of the bundle: its file and its interface (always the schema's)."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict:
        return {"file": self.file, "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}


@dataclass(frozen=True)
class Manifest:
    """A checked manifest. `head` and `adapt` say how the device learns: the head type and its initialisation
    rule (informative: init_head.onnx implements it), the default number of steps and step size, and whether
    `init.npz` holds meta-learned step sizes. `files` maps every other file to its sha256."""

    producer: dict[str, Any]
    input: InputSpec
    feature_dim: int
    head_type: str
    head_init: str
    steps: int
    lr: float
    learned_lr: bool
    opset: int
    graphs: dict[str, Graph]
    init_file: str
    init_arrays: dict[str, list[int]]
    files: dict[str, str] = field(default_factory=dict)
    batch_statistics: bool = False
    quantization: dict[str, Any] | None = None
    calibration: Temperature | None = None  # the temperature of predict's probabilities (device_runtime.calibration)
    rule: str = "sgd"  # what adapt_step runs (schema.UPDATE_RULES); "lstm" carries `state` numbers per head entry
    state: int = 0
    context: Context | None = None  # a context vector the device adapts inside the extractor (CAML)
    # open-set thresholds set on the producer's validation classes: {"known_loss": q, "thresholds": {K: τ}, ...}
    open_set: dict[str, Any] | None = None
    schema: str = SCHEMA

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        """`manifest.json` bytes → the checked `Manifest` (or `BundleError` naming what is wrong)."""
        m = jsonio.loads(data, MANIFEST, BundleError)
        if not isinstance(m, dict):
            raise BundleError(f"{MANIFEST} must hold a JSON object, got {type(m).__name__}")
        return cls.from_dict(m)

    @classmethod
    def from_dict(cls, m: dict) -> Manifest:
        schema = need(m, "schema", "str", "")
        if schema == "mtl-bundle/1":
            raise BundleError(f"{MANIFEST}: schema mtl-bundle/1 was written by an earlier mtl (no init_head graph); "
                              "export the checkpoint again")
        if schema == "mtl-bundle/2":
            raise BundleError(f"{MANIFEST}: schema mtl-bundle/2 was written by an earlier mtl (predict gives "
                              "probabilities, not log-probabilities); export the checkpoint again")
        if schema != SCHEMA:
            raise BundleError(f"{MANIFEST}: unsupported schema {schema!r:.80}; this runtime reads {SCHEMA!r}")
        producer = need(m, "producer", "dict", "")
        spec = _input_spec(m)
        dim = in_range(need(m, "feature_dim", "int", ""), "feature_dim")
        head, adapt = need(m, "head", "dict", ""), need(m, "adapt", "dict", "")
        learned_lr = need(adapt, "learned_lr", "bool", "adapt")
        rule, state = _update_rule(adapt, learned_lr)
        init = need(m, "init", "dict", "")
        context = _context(need(m, "context", "dict", "")) if "context" in m else None
        open_set = _open_set(need(m, "open_set", "dict", "")) if "open_set" in m else None
        background = open_set.get("background", 0) if open_set else 0
        manifest = cls(
            producer=producer, input=spec, feature_dim=dim, head_type=_choice(head, "type", HEAD_TYPES, "head"),
            head_init=_choice(head, "init", HEAD_INITS, "head"),
            steps=in_range(need(adapt, "steps", "int", "adapt"), "adapt.steps"),
            lr=float(in_range(need(adapt, "lr", "number", "adapt"), "adapt.lr")), learned_lr=learned_lr,
            opset=in_range(need(m, "opset", "int", ""), "opset"), graphs=_graphs(m, spec, dim, state, context),
            init_file=_member(need(init, "file", "str", "init"), "init.file"),
            init_arrays=_init_arrays(init, init_arrays(dim, learned_lr, background)), files=_files(m),
            batch_statistics=need(m, "batch_statistics", "bool", "") if "batch_statistics" in m else False,
            # informative: how embed.onnx was quantized and how close it stayed
            quantization=need(m, "quantization", "dict", "") if "quantization" in m else None,
            calibration=_calibration(need(m, "calibration", "dict", "")) if "calibration" in m else None,
            rule=rule, state=state, context=context,
            open_set=open_set)
        missing = [f for f in [g.file for g in manifest.graphs.values()] + [manifest.init_file]
                   if f not in manifest.files]
        if missing:
            raise BundleError(f"{MANIFEST}: files has no sha256 for {missing[0]!r}")
        return manifest

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": self.schema, "producer": self.producer, "input": self.input.to_dict(),
            "feature_dim": self.feature_dim, "head": {"type": self.head_type, "init": self.head_init},
            "adapt": {"steps": self.steps, "lr": self.lr, "learned_lr": self.learned_lr,
                      **({"rule": self.rule, "state": self.state} if self.rule != "sgd" else {})},
            "batch_statistics": self.batch_statistics, "opset": self.opset,
            "graphs": {name: graph.to_dict() for name, graph in self.graphs.items()},
            "init": {"file": self.init_file, "arrays": self.init_arrays}, "files": self.files}
        if self.quantization is not None:
            out["quantization"] = self.quantization
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        if self.context is not None:
            out["context"] = self.context.to_dict()
        if self.open_set is not None:
            out["open_set"] = self.open_set
        return out

    def to_json(self) -> bytes:
        """The manifest's bytes (what a signature signs); `Manifest.parse(m.to_json()) == m`."""
        return (jsonio.dumps(self.to_dict(), indent=2) + "\n").encode("utf-8")

    @staticmethod
    def graphs_for(spec: InputSpec, dim: int, state: int = 0, context: Context | None = None) -> dict[str, Graph]:
        """Every graph as the schema defines it, in `<name>.onnx`."""
        return {name: Graph(f"{name}.onnx", io.inputs, io.outputs)
                for name, io in graph_io(spec.channels, spec.size, dim, state, context).items()}


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


def _member(name: str, key: str) -> str:
    check_member_name(name, f"{MANIFEST}: {key}")
    return name


def _input_spec(m: dict) -> InputSpec:
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


def _update_rule(adapt: dict, learned_lr: bool) -> tuple[str, int]:
    """`adapt.rule` and `adapt.state` (both absent: SGD, no state)."""
    if "rule" not in adapt and "state" not in adapt:
        return "sgd", 0
    rule = _choice(adapt, "rule", UPDATE_RULES, "adapt")
    if rule == "sgd":
        if "state" in adapt:
            raise BundleError(f"{MANIFEST}: adapt.state is for a learned update rule; adapt.rule sgd has none")
        return rule, 0
    if learned_lr:
        raise BundleError(f"{MANIFEST}: adapt.rule {rule} learns its own steps; adapt.learned_lr must be false")
    return rule, in_range(need(adapt, "state", "int", "adapt"), "adapt.state")


def _open_set(section: dict) -> dict[str, Any]:
    """`open_set`: the share of known images the thresholds lose, a threshold per shot count K (keys "1", "5", …;
    a score in [-2, 2] with a background, else a similarity in [-1, 1]), and optionally `background`, the number
    of background rows `init.npz` holds (the score is then relative to them, `device_runtime.open_set`); the rest
    is informative."""
    loss = need(section, "known_loss", "number", "open_set")
    if not 0 < loss < 1:
        raise BundleError(f"{MANIFEST}: open_set.known_loss must be between 0 and 1, got {loss!r:.40}")
    thresholds = need(section, "thresholds", "dict", "open_set")
    # relative to a background a score lies in [-2, 2]; without one it is a cosine similarity
    kind, bound = ("a score", 2) if "background" in section else ("a similarity", 1)
    if not 1 <= len(thresholds) <= 16:
        raise BundleError(f"{MANIFEST}: open_set.thresholds must hold 1 to 16 entries, got {len(thresholds)}")
    for shots, value in thresholds.items():
        if not (shots.isascii() and shots.isdigit()) or not 1 <= int(shots) <= 1 << 20:  # '²' is a digit to isdigit
            raise BundleError(f"{MANIFEST}: open_set.thresholds keys must be shot counts (\"1\", \"5\"), got "
                              f"{shots!r:.20}")
        if not _is(value, "number") or not -bound <= value <= bound:
            raise BundleError(f"{MANIFEST}: open_set.thresholds.{shots} must be {kind} in [-{bound}, {bound}], got "
                              f"{value!r:.40}")
    if "background" in section:
        rows = need(section, "background", "int", "open_set")
        if not 1 <= rows <= MAX_BACKGROUND:
            raise BundleError(f"{MANIFEST}: open_set.background must be between 1 and {MAX_BACKGROUND}, got "
                              f"{rows!r:.40}")
    return dict(section)


def _context(section: dict) -> Context:
    """`context`: the context vector's size, the per-image shape of the activations it conditions, and its
    default steps and step size."""
    hidden = need(section, "hidden", "list", "context")
    if not 1 <= len(hidden) <= 3 or not all(_is(d, "int") for d in hidden):
        raise BundleError(f"{MANIFEST}: context.hidden must be a shape of 1 to 3 integers, got {hidden!r:.60}")
    for d in hidden:
        in_range(d, "shape dimension", shown="context.hidden")
        if d < 1:
            raise BundleError(f"{MANIFEST}: context.hidden must hold positive sizes, got {hidden}")
    return Context(dim=in_range(need(section, "dim", "int", "context"), "context.dim"), hidden=tuple(hidden),
                   steps=in_range(need(section, "steps", "int", "context"), "context.steps"),
                   lr=float(in_range(need(section, "lr", "number", "context"), "context.lr")))


def _graphs(m: dict, spec: InputSpec, dim: int, state: int, context: Context | None) -> dict[str, Graph]:
    """`graphs`: every graph of the schema, each listing exactly the schema's interface for these images and
    features (so a manifest cannot describe graphs the runtime would feed wrongly)."""
    graphs = need(m, "graphs", "dict", "")
    names = GRAPH_NAMES + (CONTEXT_GRAPHS if context is not None else ())
    unknown = sorted(set(graphs) - set(names))
    if unknown:
        raise BundleError(f"{MANIFEST}: unknown graph(s) {unknown!r:.80} in graphs; {SCHEMA} has {list(names)}"
                          + ("" if context is not None else " (the context graphs need a context section)"))
    expected = graph_io(spec.channels, spec.size, dim, state, context)
    out = {}
    for name in names:
        graph = need(graphs, name, "dict", "graphs")
        file = _member(need(graph, "file", "str", f"graphs.{name}"), f"graphs.{name}.file")
        for side in ("inputs", "outputs"):
            found = _tensors(graph, side, f"graphs.{name}")
            want = getattr(expected[name], side)
            if [t.name for t in found] != [t.name for t in want]:
                raise BundleError(f"{MANIFEST}: graphs.{name}.{side} must be {[t.name for t in want]}, got "
                                  f"{[t.name for t in found]!r:.80}")
            for got, wanted in zip(found, want, strict=True):
                if got != wanted:
                    raise BundleError(f"{MANIFEST}: graphs.{name}.{side} {got.name!r} must be {list(wanted.shape)} "
                                      f"{wanted.dtype}, got {list(got.shape)!r:.60} {got.dtype} (input / feature_dim)")
        out[name] = Graph(file, expected[name].inputs, expected[name].outputs)
    return out


def _tensors(graph: dict, side: str, where: str) -> list[TensorSpec]:
    tensors = []
    for i, entry in enumerate(need(graph, side, "list", where)):
        at = f"{where}.{side}[{i}]"
        if not isinstance(entry, dict):
            raise BundleError(f"{MANIFEST}: {at} must be an object, got {type(entry).__name__}")
        name = need(entry, "name", "str", at)
        shape = need(entry, "shape", "list", at)
        if len(shape) > 8 or not all(_is(d, "int") or (_is(d, "str") and 0 < len(d) <= 64) for d in shape):
            raise BundleError(f"{MANIFEST}: {at}.shape must hold up to 8 integers or axis names, got {shape!r:.60}")
        for d in shape:
            if _is(d, "int"):
                in_range(d, "shape dimension", shown=f"{at}.shape")
        dtype = need(entry, "dtype", "str", at)
        if dtype not in DTYPES:
            raise BundleError(f"{MANIFEST}: {at}.dtype must be one of {', '.join(DTYPES)}, got {dtype!r:.40}")
        tensors.append(TensorSpec(name, tuple(shape), dtype))
    return tensors


def _init_arrays(init: dict, expected: dict[str, list[int]]) -> dict[str, list[int]]:
    arrays = need(init, "arrays", "dict", "init")
    if len(arrays) > MAX_FILES:
        raise BundleError(f"{MANIFEST}: init.arrays lists {len(arrays)} arrays; a bundle has at most {MAX_FILES}")
    for name, shape in arrays.items():
        if not isinstance(shape, list) or len(shape) > 8 or not all(_is(d, "int") and d >= 0 for d in shape):
            raise BundleError(f"{MANIFEST}: init.arrays.{name} must be a shape (list of integers), got {shape!r:.60}")
        for d in shape:
            in_range(d, "shape dimension", shown=f"init.arrays.{name}")
    if set(arrays) != set(expected):
        raise BundleError(f"{MANIFEST}: init.arrays must be {sorted(expected)} (adapt.learned_lr, "
                          f"open_set.background), got {sorted(arrays)!r:.80}")
    for name, shape in expected.items():
        if arrays[name] != shape:
            raise BundleError(f"{MANIFEST}: init.arrays.{name} must have shape {shape}, got {arrays[name]}")
    return {name: list(shape) for name, shape in arrays.items()}


def _calibration(section: dict) -> Temperature:
    """`calibration`: the three temperature coefficients and the calibrated ranges of N and K."""
    for key in CALIBRATION_KEYS:
        in_range(need(section, key, "number", "calibration"), f"calibration.{key}")
    for key in ("ways", "shots"):
        bounds = need(section, key, "list", "calibration")
        if len(bounds) != 2 or not all(_is(v, "number") for v in bounds) or bounds[0] > bounds[1]:
            raise BundleError(f"{MANIFEST}: calibration.{key} must be [lowest, highest], got {bounds!r:.60}")
        for v in bounds:
            in_range(v, "calibration.range", shown=f"calibration.{key}")
    return Temperature.from_dict(section)


def _files(m: dict) -> dict[str, str]:
    files = need(m, "files", "dict", "")
    if len(files) > MAX_FILES:
        raise BundleError(f"{MANIFEST}: files lists {len(files)} files; a bundle has at most {MAX_FILES}")
    for name, digest in files.items():
        check_member_name(name, f"{MANIFEST}: files")
        if name == MANIFEST:
            raise BundleError(f"{MANIFEST}: files must not list {MANIFEST} itself")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise BundleError(f"{MANIFEST}: files.{name} must be a lower-case sha256 hex digest, got {digest!r:.70}")
    return dict(files)

