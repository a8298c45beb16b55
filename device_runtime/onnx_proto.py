"""Read what the runtime needs from an ONNX model without the `onnx` package: a minimal protobuf reader.

Graph inputs/outputs (name, element type, rank) and operator types, so a bundle's graphs can be checked
against its manifest before any of them reaches onnxruntime, and listed by `mtl bundle inspect`.
Field numbers are those of onnx.proto3 (ModelProto, GraphProto, NodeProto, ValueInfoProto, TypeProto).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

# TensorProto.DataType → numpy-style name (the ones a bundle can use).
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
              10: "float16", 11: "float64", 16: "bfloat16"}


class ProtoError(ValueError):
    """The bytes are not a well-formed ONNX model."""


@dataclass(frozen=True)
class ValueInfo:
    name: str
    dtype: str | None  # None: the graph does not say
    shape: tuple[int | str | None, ...] | None  # None: unknown rank; () a scalar


@dataclass(frozen=True)
class GraphInfo:
    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: tuple[ValueInfo, ...]
    outputs: tuple[ValueInfo, ...]
    op_types: Counter = field(default_factory=Counter)  # "Domain::Op" for non-default domains
    domains: frozenset[str] = frozenset()  # of every node (subgraphs and functions too) and opset import
    external: tuple[str, ...] = ()  # tensors whose data the model does not hold (ONNX external data)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ProtoError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) pairs of one message; length-delimited values are views, never copies."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtoError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ProtoError(f"unsupported wire type {wire}")
        if pos > end:
            raise ProtoError("truncated message")
        yield number, value


def _text(value: int | memoryview) -> str:
    if not isinstance(value, memoryview):
        raise ProtoError("expected a string field")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtoError(f"string is not UTF-8: {exc}") from None


def _message(value: int | memoryview) -> memoryview:
    if not isinstance(value, memoryview):
        raise ProtoError("expected an embedded message")
    return value


def _dim(buf: memoryview) -> int | str | None:
    for number, value in _fields(buf):
        if number == 1 and isinstance(value, int):
            return value
        if number == 2:
            return _text(value)
    return None


def _value_info(buf: memoryview) -> ValueInfo:
    """ValueInfoProto: 1 name, 2 type → TypeProto 1 tensor_type → 1 elem_type, 2 shape → 1 dim."""
    name, dtype, shape = "", None, None
    for number, value in _fields(buf):
        if number == 1:
            name = _text(value)
        elif number == 2:
            for t_number, t_value in _fields(_message(value)):
                if t_number != 1:
                    continue
                for k, v in _fields(_message(t_value)):
                    if k == 1 and isinstance(v, int):
                        dtype = ELEM_TYPES.get(v, f"type{v}")
                    elif k == 2:
                        shape = tuple(_dim(_message(d)) for n, d in _fields(_message(v)) if n == 1)
    return ValueInfo(name, dtype, shape)


MAX_NESTING = 32  # subgraphs (If / Loop / Scan bodies) inside subgraphs; real models nest one or two deep


class _Walk:
    """Everything a model holds, nested subgraphs and local functions included: the operator types (top-level
    graph) and domains (anywhere), and every tensor whose data lives OUTSIDE the model's bytes — ONNX external
    data, which onnxruntime would read from a path relative to the working directory, not from the bundle."""

    def __init__(self) -> None:
        self.ops: Counter = Counter()
        self.domains: set[str] = set()
        self.external: list[str] = []

    def graph(self, buf: memoryview, depth: int, top: bool = False) -> tuple[list[ValueInfo], list[ValueInfo]]:
        """GraphProto: 1 node, 5 initializer, 15 sparse_initializer, 11 input, 12 output. Initializers listed
        as inputs (IR < 4) are weights, not inputs."""
        if depth > MAX_NESTING:
            raise ProtoError(f"subgraphs nested more than {MAX_NESTING} deep")
        inputs, outputs, weights = [], [], set()
        for number, value in _fields(buf):
            if number == 1:
                self.node(_message(value), depth, top)
            elif number == 5:
                weights.add(self.tensor(_message(value)))
            elif number == 15:
                self.sparse(_message(value))
            elif number == 11:
                inputs.append(_value_info(_message(value)))
            elif number == 12:
                outputs.append(_value_info(_message(value)))
        return [i for i in inputs if i.name not in weights], outputs

    def node(self, buf: memoryview, depth: int, top: bool) -> None:
        """NodeProto: 4 op_type, 7 domain, 5 attribute → AttributeProto: 5 t, 6 g, 10 tensors, 11 graphs,
        22 sparse_tensor, 23 sparse_tensors."""
        op, domain = "", ""
        for number, value in _fields(buf):
            if number == 4:
                op = _text(value)
            elif number == 7:
                domain = _text(value)
            elif number == 5:
                for a_number, a_value in _fields(_message(value)):
                    if a_number in (5, 10):
                        self.tensor(_message(a_value))
                    elif a_number in (6, 11):
                        self.graph(_message(a_value), depth + 1)
                    elif a_number in (22, 23):
                        self.sparse(_message(a_value))
        self.domains.add(domain or "ai.onnx")
        if top:
            self.ops[op if domain in ("", "ai.onnx") else f"{domain}::{op}"] += 1

    def tensor(self, buf: memoryview) -> str:
        """TensorProto: 8 name, 13 external_data, 14 data_location (1 = EXTERNAL); returns its name."""
        name, external = "", False
        for number, value in _fields(buf):
            if number == 8:
                name = _text(value)
            elif number == 13 or (number == 14 and value != 0):
                external = True
        if external:
            self.external.append(name or "<unnamed>")
        return name

    def sparse(self, buf: memoryview) -> None:
        """SparseTensorProto: 1 values, 2 indices (both TensorProto)."""
        for number, value in _fields(buf):
            if number in (1, 2):
                self.tensor(_message(value))

    def function(self, buf: memoryview) -> None:
        """FunctionProto: 7 node (a model-local function's body)."""
        for number, value in _fields(buf):
            if number == 7:
                self.node(_message(value), 1, False)


def read_graph_info(data: bytes) -> GraphInfo:
    """ModelProto bytes → `GraphInfo`; raises `ProtoError` when they are not an ONNX model.
    ModelProto: 1 ir_version, 2 producer_name, 7 graph, 8 opset_import, 20 training_info, 25 functions."""
    ir_version, producer, opsets, graph = None, "", {}, None
    walk = _Walk()
    for number, value in _fields(memoryview(data)):
        if number == 1 and isinstance(value, int):
            ir_version = value
        elif number == 2:
            producer = _text(value)
        elif number == 7:
            graph = walk.graph(_message(value), 0, top=True)
        elif number == 8:
            opset = dict(_fields(_message(value)))
            domain = _text(opset.get(1, memoryview(b"")))
            opsets[domain or "ai.onnx"] = int(opset[2]) if isinstance(opset.get(2), int) else 0
        elif number == 20:  # TrainingInfoProto: 1 initialization, 2 algorithm (GraphProto)
            for t_number, t_value in _fields(_message(value)):
                if t_number in (1, 2):
                    walk.graph(_message(t_value), 1)
        elif number == 25:
            walk.function(_message(value))
    if ir_version is None or graph is None or not graph[1]:
        raise ProtoError("no ir_version or no graph with outputs")
    inputs, outputs = graph
    return GraphInfo(ir_version, producer, opsets, tuple(inputs), tuple(outputs), walk.ops,
                     frozenset(walk.domains | set(opsets)), tuple(walk.external))
