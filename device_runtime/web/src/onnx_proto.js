// What the runtime checks in a graph before onnxruntime sees it, from the protobuf alone (a port of
// device_runtime/onnx_proto.py): inputs and outputs (name, element type, rank), the operator domains of every node
// (subgraphs and model-local functions included), and every tensor whose data lives outside the file.
const ELEM_TYPES = { 1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
  10: "float16", 11: "float64", 16: "bfloat16" };
const MAX_NESTING = 32;

export class ProtoError extends Error {}

function varint(buf, pos) {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    if (pos >= buf.length || shift > 63n) throw new ProtoError("truncated or overlong varint");
    const byte = buf[pos++];
    result |= BigInt(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return [result, pos];
    shift += 7n;
  }
}

function* fields(buf) {
  let pos = 0;
  while (pos < buf.length) {
    let key;
    [key, pos] = varint(buf, pos);
    const number = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (number === 0) throw new ProtoError("field number 0");
    let value;
    if (wire === 0) {
      let v;
      [v, pos] = varint(buf, pos);
      value = v;
    } else if (wire === 2) {
      let length;
      [length, pos] = varint(buf, pos);
      if (length > BigInt(buf.length - pos)) throw new ProtoError("truncated message");
      value = buf.subarray(pos, pos + Number(length));
      pos += Number(length);
    } else if (wire === 1 || wire === 5) {
      const size = wire === 1 ? 8 : 4;
      value = buf.subarray(pos, pos + size);
      pos += size;
    } else throw new ProtoError(`unsupported wire type ${wire}`);
    if (pos > buf.length) throw new ProtoError("truncated message");
    yield [number, value];
  }
}

const isBytes = (value) => value instanceof Uint8Array;

function text(value) {
  if (!isBytes(value)) throw new ProtoError("expected a string field");
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(value);
  } catch (error) {
    throw new ProtoError(`string is not UTF-8: ${error.message}`);
  }
}

function message(value) {
  if (!isBytes(value)) throw new ProtoError("expected an embedded message");
  return value;
}

function dim(buf) {
  for (const [number, value] of fields(buf)) {
    if (number === 1 && typeof value === "bigint") return Number(value);
    if (number === 2) return text(value);
  }
  return null;
}

function valueInfo(buf) {
  let name = "";
  let dtype = null;
  let shape = null;
  for (const [number, value] of fields(buf)) {
    if (number === 1) name = text(value);
    else if (number === 2) {
      for (const [tNumber, tValue] of fields(message(value))) {
        if (tNumber !== 1) continue;
        for (const [k, v] of fields(message(tValue))) {
          if (k === 1 && typeof v === "bigint") dtype = ELEM_TYPES[Number(v)] ?? `type${v}`;
          else if (k === 2) shape = [...fields(message(v))].filter(([n]) => n === 1).map(([, d]) => dim(message(d)));
        }
      }
    }
  }
  return { name, dtype, shape };
}

class Walk {
  constructor() {
    this.ops = new Map();
    this.domains = new Set();
    this.external = [];
  }
  graph(buf, depth, top = false) {
    if (depth > MAX_NESTING) throw new ProtoError(`subgraphs nested more than ${MAX_NESTING} deep`);
    const inputs = [];
    const outputs = [];
    const weights = new Set();
    for (const [number, value] of fields(buf)) {
      if (number === 1) this.node(message(value), depth, top);
      else if (number === 5) weights.add(this.tensor(message(value)));
      else if (number === 15) this.sparse(message(value));
      else if (number === 11) inputs.push(valueInfo(message(value)));
      else if (number === 12) outputs.push(valueInfo(message(value)));
    }
    return [inputs.filter((i) => !weights.has(i.name)), outputs];
  }
  node(buf, depth, top) {
    let op = "";
    let domain = "";
    for (const [number, value] of fields(buf)) {
      if (number === 4) op = text(value);
      else if (number === 7) domain = text(value);
      else if (number === 5) {
        for (const [aNumber, aValue] of fields(message(value))) {
          if (aNumber === 5 || aNumber === 10) this.tensor(message(aValue));
          else if (aNumber === 6 || aNumber === 11) this.graph(message(aValue), depth + 1);
          else if (aNumber === 22 || aNumber === 23) this.sparse(message(aValue));
        }
      }
    }
    this.domains.add(domain || "ai.onnx");
    if (top) {
      const key = domain === "" || domain === "ai.onnx" ? op : `${domain}::${op}`;
      this.ops.set(key, (this.ops.get(key) || 0) + 1);
    }
  }
  tensor(buf) {
    let name = "";
    let external = false;
    for (const [number, value] of fields(buf)) {
      if (number === 8) name = text(value);
      else if (number === 13 || (number === 14 && value !== 0n)) external = true;
    }
    if (external) this.external.push(name || "<unnamed>");
    return name;
  }
  sparse(buf) {
    for (const [number, value] of fields(buf)) if (number === 1 || number === 2) this.tensor(message(value));
  }
  func(buf) {
    for (const [number, value] of fields(buf)) if (number === 7) this.node(message(value), 1, false);
  }
}

// ModelProto bytes → { irVersion, producer, opsets, inputs, outputs, ops, domains, external }.
export function readGraphInfo(data) {
  let irVersion = null;
  let producer = "";
  const opsets = Object.create(null); // a domain may be named "__proto__"
  let graph = null;
  const walk = new Walk();
  for (const [number, value] of fields(data)) {
    if (number === 1 && typeof value === "bigint") irVersion = Number(value);
    else if (number === 2) producer = text(value);
    else if (number === 7) graph = walk.graph(message(value), 0, true);
    else if (number === 8) {
      const opset = new Map(fields(message(value)));
      const domain = text(opset.get(1) ?? new Uint8Array());
      opsets[domain || "ai.onnx"] = typeof opset.get(2) === "bigint" ? Number(opset.get(2)) : 0;
    } else if (number === 20) {
      for (const [tNumber, tValue] of fields(message(value))) if (tNumber === 1 || tNumber === 2) walk.graph(message(tValue), 1);
    } else if (number === 25) walk.func(message(value));
  }
  if (irVersion === null || graph === null || !graph[1].length) throw new ProtoError("no ir_version or no graph with outputs");
  return { irVersion, producer, opsets, inputs: graph[0], outputs: graph[1], ops: walk.ops,
    domains: new Set([...walk.domains, ...Object.keys(opsets)]), external: walk.external };
}
