// The bundle manifest (docs/bundle.md), checked exactly as the Python runtime checks it
// (device_runtime/manifest.py and schema.py): every key, type, range and graph interface, each fault named in one
// line. The tests run one corpus of bad bundles through both runtimes (tests/web).
import { BundleError, isPrintable, repr, typeName } from "./errors.js";
import { JsonFloat, keysOf, loads } from "./jsonio.js";

export const SCHEMA = "mtl-bundle/3";
export const MANIFEST = "manifest.json";
export const SIGNATURE = "manifest.sig";
export const HEAD_TYPES = ["linear", "cosine", "siamese"];
export const HEAD_INITS = ["learned", "proto", "zero"];
export const UPDATE_RULES = ["sgd", "lstm"];
export const STANDARD_DOMAINS = new Set(["", "ai.onnx", "ai.onnx.ml"]);
export const DTYPES = ["float32", "float16", "float64", "int64", "int32", "uint8", "bool"];
export const GRAPH_NAMES = ["embed", "init_head", "adapt_step", "predict"];
export const CONTEXT_GRAPHS = ["embed_prefix", "context_step", "embed_suffix"];
export const BACKGROUND = "open_set_background"; // init.npz: the open-set background (open_set.background rows)
export const MAX_BACKGROUND = 4096;
export const RESIZE_METHODS = ["bilinear", "bicubic", "nearest", "lanczos", "box"];
export const LIMITS = {
  "input.size": [8, 1024],
  "input.mean": [-100.0, 100.0],
  "input.std": [1e-4, 1e4],
  feature_dim: [1, 1 << 16],
  "adapt.steps": [0, 1000],
  "adapt.lr": [1e-12, 1e3],
  "adapt.state": [1, 4096],
  "context.dim": [1, 4096],
  "context.steps": [0, 1000],
  "context.lr": [1e-12, 1e3],
  opset: [7, 30],
  "shape dimension": [0, 1 << 20],
  "calibration.log_temperature": [-20.0, 20.0],
  "calibration.per_log_ways": [-10.0, 10.0],
  "calibration.per_log_shots": [-10.0, 10.0],
  "calibration.range": [1, 1 << 20],
};
export const MAX_FILES = 16;
export const MAX_NAME = 255;
const SHA256 = /^[0-9a-f]{64}$/;
const KINDS = { int: "an integer", number: "a number", bool: "true or false", str: "a string", dict: "an object",
  list: "a list" };
const CALIBRATION_KEYS = ["log_temperature", "per_log_ways", "per_log_shots"];

const fail = (message) => {
  throw new BundleError(message);
};

export { isPrintable };

function is(value, kind) {
  switch (kind) {
    case "int":
      return typeof value === "number" || typeof value === "bigint"; // integers only: a float is a JsonFloat
    case "number":
      return typeof value === "number" || typeof value === "bigint" || value instanceof JsonFloat;
    case "bool":
      return typeof value === "boolean";
    case "str":
      return typeof value === "string";
    case "list":
      return Array.isArray(value);
    case "dict":
      return value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof JsonFloat);
    default:
      throw new Error(kind);
  }
}

const has = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);

export function need(obj, key, kind, where) {
  const path = where ? `${where}.${key}` : key;
  if (!has(obj, key)) fail(`${MANIFEST}: missing key ${repr(path)}`);
  const value = obj[key];
  if (!is(value, kind)) fail(`${MANIFEST}: ${path} must be ${KINDS[kind]}, got ${typeName(value)} ${repr(value, 60)}`);
  return kind === "number" ? Number(value) : value;
}

// Python's format(x, "g"): six significant digits, exponent form below 1e-4 and from 1e6 on, no trailing zeros.
function g(x) {
  if (x === 0) return "0";
  const strip = (text) => (text.includes(".") ? text.replace(/\.?0+$/, "") : text);
  const [mantissa, power] = x.toExponential(5).split("e");
  const e = Number(power);
  if (e < -4 || e >= 6) return `${strip(mantissa)}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  return strip(x.toFixed(5 - e));
}

export function inRange(value, key, where = MANIFEST, shown = null) {
  const [low, high] = LIMITS[key];
  const number = Number(value);
  if (!(low <= number && number <= high)) {
    fail(`${where}: ${shown || key} must be between ${g(low)} and ${g(high)}, got ${repr(value, 40)}`);
  }
  return number;
}

export function checkMemberName(name, where) {
  const parts = name.split("/");
  if (!name || [...name].length > MAX_NAME || name.startsWith("/") || name.includes("\\") || name.includes(":") ||
      !isPrintable(name) || parts.some((p) => p === "" || p === "." || p === "..")) {
    fail(`${where}: unsafe file name ${repr(name, 80)} (absolute, '..' or not a plain relative path)`);
  }
}

function member(name, key) {
  checkMemberName(name, `${MANIFEST}: ${key}`);
  return name;
}

// THE interface of every graph (schema.graph_io).
export function graphIO(channels, size, dim, state = 0, context = null) {
  const t = (name, shape, dtype = "float32") => ({ name, shape, dtype });
  const head = [t("weight", ["N", dim]), t("bias", ["N"])];
  const support = [t("features", ["M", dim])];
  let ruleInputs = [t("lr_weight", [1, dim]), t("lr_bias", [1])];
  let ruleOutputs = [];
  if (state) {
    ruleInputs = [t("state_weight", ["N", dim, state]), t("state_bias", ["N", state])];
    ruleOutputs = [t("new_state_weight", ["N", dim, state]), t("new_state_bias", ["N", state])];
  }
  const graphs = {
    embed: { inputs: [t("images", ["B", channels, size, size])], outputs: [t("features", ["B", dim])] },
    init_head: { inputs: [...support, t("onehot", ["M", "N"])], outputs: head },
    adapt_step: { inputs: [...head, ...support, t("labels", ["M"], "int64"), ...ruleInputs],
      outputs: [t("new_weight", ["N", dim]), t("new_bias", ["N"]), t("loss", []), ...ruleOutputs] },
    predict: { inputs: [...head, t("features", ["B", dim])], outputs: [t("log_probabilities", ["B", "N"])] },
  };
  if (context) {
    const phi = t("context", [context.dim]);
    graphs.embed_prefix = { inputs: [t("images", ["B", channels, size, size])],
      outputs: [t("hidden", ["B", ...context.hidden])] };
    graphs.context_step = { inputs: [t("hidden", ["M", ...context.hidden]), t("labels", ["M"], "int64"),
      t("onehot", ["M", "N"]), phi, t("lr_context", [1])], outputs: [t("new_context", [context.dim]), t("loss", [])] };
    graphs.embed_suffix = { inputs: [t("hidden", ["B", ...context.hidden]), phi], outputs: [t("features", ["B", dim])] };
  }
  return graphs;
}

// manifest.json bytes → the checked manifest (a plain object), or BundleError naming what is wrong.
export function parseManifest(bytes) {
  const m = loads(bytes, MANIFEST, (message) => new BundleError(message));
  if (!is(m, "dict")) fail(`${MANIFEST} must hold a JSON object, got ${typeName(m)}`);
  return fromDict(m);
}

function fromDict(m) {
  const schema = need(m, "schema", "str", "");
  if (schema === "mtl-bundle/1") {
    fail(`${MANIFEST}: schema mtl-bundle/1 was written by an earlier mtl (no init_head graph); export the checkpoint again`);
  }
  if (schema === "mtl-bundle/2") {
    fail(`${MANIFEST}: schema mtl-bundle/2 was written by an earlier mtl (predict gives probabilities, not ` +
      "log-probabilities); export the checkpoint again");
  }
  if (schema !== SCHEMA) fail(`${MANIFEST}: unsupported schema ${repr(schema, 80)}; this runtime reads ${repr(SCHEMA)}`);
  const producer = need(m, "producer", "dict", "");
  const input = inputSpec(m);
  const dim = inRange(need(m, "feature_dim", "int", ""), "feature_dim");
  const head = need(m, "head", "dict", "");
  const adapt = need(m, "adapt", "dict", "");
  const learnedLr = need(adapt, "learned_lr", "bool", "adapt");
  const [rule, state] = updateRule(adapt, learnedLr);
  const init = need(m, "init", "dict", "");
  const context = has(m, "context") ? contextSection(need(m, "context", "dict", "")) : null;
  const openSetSection = has(m, "open_set") ? openSet(need(m, "open_set", "dict", "")) : null;
  const headType = choice(head, "type", HEAD_TYPES, "head");
  const headInit = choice(head, "init", HEAD_INITS, "head");
  const steps = inRange(need(adapt, "steps", "int", "adapt"), "adapt.steps");
  const lr = inRange(need(adapt, "lr", "number", "adapt"), "adapt.lr");
  const opset = inRange(need(m, "opset", "int", ""), "opset");
  const graphs = graphSection(m, input, dim, state, context);
  const initFile = member(need(init, "file", "str", "init"), "init.file");
  const background = openSetSection && has(openSetSection, "background") ? Number(openSetSection.background) : 0;
  const arrays = initArrays(init, {
    ...(learnedLr ? { lr_weight: [1, dim], lr_bias: [1] } : {}),
    ...(background ? { [BACKGROUND]: [background, dim] } : {}),
  });
  const files = fileSection(m);
  const manifest = {
    schema, producer, input, featureDim: dim, headType, headInit, steps, lr, learnedLr, opset, graphs,
    initFile, initArrays: arrays, files,
    batchStatistics: has(m, "batch_statistics") ? need(m, "batch_statistics", "bool", "") : false,
    quantization: has(m, "quantization") ? need(m, "quantization", "dict", "") : null,
    calibration: has(m, "calibration") ? calibrationSection(need(m, "calibration", "dict", "")) : null,
    rule, state, context,
    openSet: openSetSection,
  };
  const missing = [...Object.values(graphs).map((gr) => gr.file), initFile].filter((f) => !files.has(f));
  if (missing.length) fail(`${MANIFEST}: files has no sha256 for ${repr(missing[0])}`);
  return manifest;
}

function inputSpec(m) {
  const spec = need(m, "input", "dict", "");
  for (const [key, kind] of [["size", "int"], ["channels", "int"], ["mean", "list"], ["std", "list"],
    ["invert", "bool"], ["resize", "str"]]) need(spec, key, kind, "input");
  inRange(spec.size, "input.size");
  if (spec.channels !== 1 && spec.channels !== 3) {
    fail(`${MANIFEST}: input: image channels must be 1 or 3, got ${repr(spec.channels, 40)}`);
  }
  for (const key of ["mean", "std"]) {
    const values = spec[key];
    if (values.length !== spec.channels || !values.every((v) => is(v, "number"))) {
      fail(`${MANIFEST}: input.${key} must be a list of numbers, one per channel (${spec.channels}), got ${repr(values, 60)}`);
    }
    for (const v of values) inRange(v, `input.${key}`);
  }
  if (spec.std.some((s) => Number(s) <= 0)) fail(`${MANIFEST}: input: std must be positive, got ${repr(spec.std)}`);
  if (!RESIZE_METHODS.includes(spec.resize)) {
    fail(`${MANIFEST}: input: unknown resize method ${repr(spec.resize)}; choose from ${repr([...RESIZE_METHODS].sort())}`);
  }
  return { size: spec.size, channels: spec.channels, mean: spec.mean.map(Number), std: spec.std.map(Number),
    invert: spec.invert, resize: spec.resize };
}

function choice(obj, key, choices, where) {
  const value = need(obj, key, "str", where);
  if (!choices.includes(value)) fail(`${MANIFEST}: ${where}.${key} must be one of ${choices.join(", ")}, got ${repr(value, 60)}`);
  return value;
}

function updateRule(adapt, learnedLr) {
  if (!has(adapt, "rule") && !has(adapt, "state")) return ["sgd", 0];
  const rule = choice(adapt, "rule", UPDATE_RULES, "adapt");
  if (rule === "sgd") {
    if (has(adapt, "state")) fail(`${MANIFEST}: adapt.state is for a learned update rule; adapt.rule sgd has none`);
    return [rule, 0];
  }
  if (learnedLr) fail(`${MANIFEST}: adapt.rule ${rule} learns its own steps; adapt.learned_lr must be false`);
  return [rule, inRange(need(adapt, "state", "int", "adapt"), "adapt.state")];
}

function openSet(section) {
  const loss = need(section, "known_loss", "number", "open_set");
  if (!(loss > 0 && loss < 1)) fail(`${MANIFEST}: open_set.known_loss must be between 0 and 1, got ${repr(loss, 40)}`);
  const thresholds = need(section, "thresholds", "dict", "open_set");
  // relative to a background a score lies in [-2, 2]; without one it is a cosine similarity
  const [kind, bound] = has(section, "background") ? ["a score", 2] : ["a similarity", 1];
  const keys = keysOf(thresholds);
  if (keys.length < 1 || keys.length > 16) {
    fail(`${MANIFEST}: open_set.thresholds must hold 1 to 16 entries, got ${keys.length}`);
  }
  for (const shots of keys) {
    const value = thresholds[shots];
    if (!/^[0-9]+$/.test(shots) || !(Number(shots) >= 1 && Number(shots) <= 1 << 20)) {
      fail(`${MANIFEST}: open_set.thresholds keys must be shot counts ("1", "5"), got ${repr(shots, 20)}`);
    }
    if (!is(value, "number") || !(Number(value) >= -bound && Number(value) <= bound)) {
      fail(`${MANIFEST}: open_set.thresholds.${shots} must be ${kind} in [-${bound}, ${bound}], got ${repr(value, 40)}`);
    }
  }
  if (has(section, "background")) {
    const rows = need(section, "background", "int", "open_set");
    if (!(Number(rows) >= 1 && Number(rows) <= MAX_BACKGROUND)) {
      fail(`${MANIFEST}: open_set.background must be between 1 and ${MAX_BACKGROUND}, got ${repr(rows, 40)}`);
    }
  }
  return section;
}

function contextSection(section) {
  const hidden = need(section, "hidden", "list", "context");
  if (hidden.length < 1 || hidden.length > 3 || !hidden.every((d) => is(d, "int"))) {
    fail(`${MANIFEST}: context.hidden must be a shape of 1 to 3 integers, got ${repr(hidden, 60)}`);
  }
  for (const d of hidden) {
    inRange(d, "shape dimension", MANIFEST, "context.hidden");
    if (d < 1) fail(`${MANIFEST}: context.hidden must hold positive sizes, got ${repr(hidden)}`);
  }
  return { dim: inRange(need(section, "dim", "int", "context"), "context.dim"), hidden: [...hidden],
    steps: inRange(need(section, "steps", "int", "context"), "context.steps"),
    lr: inRange(need(section, "lr", "number", "context"), "context.lr") };
}

function graphSection(m, spec, dim, state, context) {
  const graphs = need(m, "graphs", "dict", "");
  const names = [...GRAPH_NAMES, ...(context ? CONTEXT_GRAPHS : [])];
  const unknown = Object.keys(graphs).filter((n) => !names.includes(n)).sort();
  if (unknown.length) {
    fail(`${MANIFEST}: unknown graph(s) ${repr(unknown, 80)} in graphs; ${SCHEMA} has ${repr(names)}` +
      (context ? "" : " (the context graphs need a context section)"));
  }
  const expected = graphIO(spec.channels, spec.size, dim, state, context);
  const out = {};
  for (const name of names) {
    const graph = need(graphs, name, "dict", "graphs");
    const file = member(need(graph, "file", "str", `graphs.${name}`), `graphs.${name}.file`);
    for (const side of ["inputs", "outputs"]) {
      const found = tensors(graph, side, `graphs.${name}`);
      const want = expected[name][side];
      const foundNames = found.map((t) => t.name);
      const wantNames = want.map((t) => t.name);
      if (JSON.stringify(foundNames) !== JSON.stringify(wantNames)) {
        fail(`${MANIFEST}: graphs.${name}.${side} must be ${repr(wantNames)}, got ${repr(foundNames, 80)}`);
      }
      found.forEach((got, i) => {
        const wanted = want[i];
        if (JSON.stringify(got.shape) !== JSON.stringify(wanted.shape) || got.dtype !== wanted.dtype) {
          fail(`${MANIFEST}: graphs.${name}.${side} ${repr(got.name)} must be ${repr(wanted.shape)} ${wanted.dtype}, ` +
            `got ${repr(got.shape, 60)} ${got.dtype} (input / feature_dim)`);
        }
      });
    }
    out[name] = { file, ...expected[name] };
  }
  return out;
}

function tensors(graph, side, where) {
  return need(graph, side, "list", where).map((entry, i) => {
    const at = `${where}.${side}[${i}]`;
    if (!is(entry, "dict")) fail(`${MANIFEST}: ${at} must be an object, got ${typeName(entry)}`);
    const name = need(entry, "name", "str", at);
    const shape = need(entry, "shape", "list", at);
    if (shape.length > 8 || !shape.every((d) => is(d, "int") || (is(d, "str") && d.length > 0 && d.length <= 64))) {
      fail(`${MANIFEST}: ${at}.shape must hold up to 8 integers or axis names, got ${repr(shape, 60)}`);
    }
    for (const d of shape) if (is(d, "int")) inRange(d, "shape dimension", MANIFEST, `${at}.shape`);
    const dtype = need(entry, "dtype", "str", at);
    if (!DTYPES.includes(dtype)) fail(`${MANIFEST}: ${at}.dtype must be one of ${DTYPES.join(", ")}, got ${repr(dtype, 40)}`);
    return { name, shape, dtype };
  });
}

function initArrays(init, expected) {
  const arrays = need(init, "arrays", "dict", "init");
  const names = keysOf(arrays);
  if (names.length > MAX_FILES) fail(`${MANIFEST}: init.arrays lists ${names.length} arrays; a bundle has at most ${MAX_FILES}`);
  for (const name of names) {
    const shape = arrays[name];
    if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => is(d, "int") && d >= 0)) {
      fail(`${MANIFEST}: init.arrays.${name} must be a shape (list of integers), got ${repr(shape, 60)}`);
    }
    for (const d of shape) inRange(d, "shape dimension", MANIFEST, `init.arrays.${name}`);
  }
  const want = Object.keys(expected).sort();
  if (JSON.stringify([...names].sort()) !== JSON.stringify(want)) {
    fail(`${MANIFEST}: init.arrays must be ${repr(want)} (adapt.learned_lr, open_set.background), got ${repr([...names].sort(), 80)}`);
  }
  for (const name of want) {
    if (JSON.stringify(arrays[name]) !== JSON.stringify(expected[name])) {
      fail(`${MANIFEST}: init.arrays.${name} must have shape ${repr(expected[name])}, got ${repr(arrays[name])}`);
    }
  }
  return Object.fromEntries(names.map((n) => [n, [...arrays[n]]]));
}

function calibrationSection(section) {
  for (const key of CALIBRATION_KEYS) inRange(need(section, key, "number", "calibration"), `calibration.${key}`);
  for (const key of ["ways", "shots"]) {
    const bounds = need(section, key, "list", "calibration");
    if (bounds.length !== 2 || !bounds.every((v) => is(v, "number")) || Number(bounds[0]) > Number(bounds[1])) {
      fail(`${MANIFEST}: calibration.${key} must be [lowest, highest], got ${repr(bounds, 60)}`);
    }
    for (const v of bounds) inRange(v, "calibration.range", MANIFEST, `calibration.${key}`);
  }
  return { logTemperature: Number(section.log_temperature), perLogWays: Number(section.per_log_ways),
    perLogShots: Number(section.per_log_shots), ways: section.ways.map(Number), shots: section.shots.map(Number) };
}

function fileSection(m) {
  const files = need(m, "files", "dict", "");
  const names = keysOf(files);
  if (names.length > MAX_FILES) fail(`${MANIFEST}: files lists ${names.length} files; a bundle has at most ${MAX_FILES}`);
  for (const name of names) {
    checkMemberName(name, `${MANIFEST}: files`);
    if (name === MANIFEST) fail(`${MANIFEST}: files must not list ${MANIFEST} itself`);
    const digest = files[name];
    if (typeof digest !== "string" || !SHA256.test(digest)) {
      fail(`${MANIFEST}: files.${name} must be a lower-case sha256 hex digest, got ${repr(digest, 70)}`);
    }
  }
  return new Map(names.map((n) => [n, files[n]])); // in the file's order: the first bad digest is named
}
