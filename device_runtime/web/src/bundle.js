// `Bundle`: a verified deploy bundle (docs/bundle.md) and one onnxruntime session per graph — the checks of the
// Python `Bundle.load`, in its order, before any graph reaches onnxruntime: the zip (members safe), the manifest
// schema, the sha256 of every file, each graph's inputs and outputs against the manifest, and init.npz against
// init.arrays. `ort` is onnxruntime-web in a page, onnxruntime-node under Node: the same code runs on both.
import { ZipSource } from "./archive.js";
import { BundleError, ConfigError, DataError, repr } from "./errors.js";
import { MANIFEST, parseManifest, SIGNATURE, STANDARD_DOMAINS } from "./manifest.js";
import { readNpz } from "./npy.js";
import { ProtoError, readGraphInfo } from "./onnx_proto.js";
import { sha256Hex } from "./sha256.js";
import { publicKey, verifyManifest } from "./signing.js";

export const EMBED_BATCH = 8; // images per embed run, as the Python runtime (device_runtime/bundle.py)

// A float32 array with its shape: what graphs take and give.
export const tensor = (data, shape) => ({ data, shape });

const message = (error) => (String(error?.message ?? error).trim().split("\n")[0] || error?.name || "error");

export class Bundle {
  constructor(manifestBytes, manifest, files, label, signature) {
    this.manifestBytes = manifestBytes;
    this.manifest = manifest;
    this.inputSpec = manifest.input;
    this.featureDim = manifest.featureDim;
    this.files = files;
    this.label = label;
    this.signature = signature;
    this.sessions = {};
  }

  // `.mtlb` bytes (Uint8Array) → a verified Bundle; any fault raises BundleError naming it. With `key`
  // ({ pem, name }: an Ed25519 public key in PEM) the bundle must also carry its valid signature.
  static async load(bytes, { ort, label = "<bundle bytes>", threads = 1, backend = "wasm", key = null } = {}) {
    if (!ort) throw new ConfigError("Bundle.load needs the onnxruntime module (ort)");
    const verifier = key ? await publicKey(key.pem, key.name) : null;
    const source = new ZipSource(bytes, label);
    const manifestBytes = source.read(MANIFEST);
    const signature = source.readOptional(SIGNATURE);
    if (verifier) await verifyManifest(manifestBytes, signature, verifier, key.name, label); // before parsing
    const listed = parseManifest(manifestBytes).files;
    source.checkListed(new Set(listed.keys()));
    const files = Object.create(null); // a member may be named "__proto__"
    for (const name of [...listed.keys()].sort()) files[name] = source.read(name);
    const manifest = parseManifest(manifestBytes);
    const bundle = new Bundle(manifestBytes, manifest, files, label, signature);
    await checkDigests(manifest, files);
    bundle.graphs = Object.fromEntries(Object.keys(manifest.graphs).map((name) => [name, graphInfo(manifest, name, files)]));
    bundle.init = loadInit(manifest, files);
    bundle.sha256 = await sha256Hex(bytes);
    for (const name of Object.keys(manifest.graphs)) {
      const file = manifest.graphs[name].file;
      try {
        bundle.sessions[name] = await ort.InferenceSession.create(files[file], {
          executionProviders: [backend], intraOpNumThreads: threads, interOpNumThreads: 1, logSeverityLevel: 3,
          graphOptimizationLevel: "all" });
      } catch (error) {
        throw new BundleError(`${file}: onnxruntime cannot load it: ${message(error)}`);
      }
    }
    bundle.ort = ort;
    return bundle;
  }

  get batchStatistics() {
    return this.manifest.batchStatistics;
  }

  get context() {
    return this.manifest.context;
  }

  // A support set kept as images and embedded at adaptation: its features depend on the whole set.
  get keepsImages() {
    return this.batchStatistics || this.context !== null;
  }

  async run(graph, feeds, outputs) {
    const ort = this.ort;
    const inputs = {};
    for (const [name, value] of Object.entries(feeds)) {
      const type = value.data instanceof BigInt64Array ? "int64" : "float32";
      inputs[name] = new ort.Tensor(type, value.data, value.shape);
    }
    let result;
    try {
      result = await this.sessions[graph].run(inputs);
    } catch (error) {
      throw new BundleError(`${this.manifest.graphs[graph].file}: onnxruntime failed: ${message(error)}`);
    }
    return outputs.map((name) => {
      const out = result[name];
      return tensor(out.data, [...out.dims]);
    });
  }

  checkOutput(graph, array, shape) {
    const same = array.shape.length === shape.length && array.shape.every((d, i) => d === shape[i]);
    if (!same) {
      throw new BundleError(`${this.manifest.graphs[graph].file}: output has shape ${tuple(array.shape)}, expected ${tuple(shape)}`);
    }
  }

  // A loss must be one number (Python: loss.reshape(-1) of shape (1,)).
  checkLoss(graph, loss) {
    this.checkOutput(graph, tensor(loss.data, [loss.data.length]), [1]);
    return loss.data[0];
  }

  // Run a one-input graph over a batch (B, …), `batchSize` at a time (all at once with batch statistics).
  async batched(graph, batch, shape, batchSize = EMBED_BATCH, extra = {}) {
    const name = this.manifest.graphs[graph].inputs[0].name;
    const count = batch.shape[0];
    const per = batch.data.length / Math.max(count, 1);
    const step = this.batchStatistics ? Math.max(count, 1) : batchSize;
    const width = shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(count * width);
    for (let i = 0; i < count; i += step) {
      const n = Math.min(step, count - i);
      const part = tensor(batch.data.subarray(i * per, (i + n) * per), [n, ...batch.shape.slice(1)]);
      const [result] = await this.run(graph, { [name]: part, ...extra }, [this.manifest.graphs[graph].outputs[0].name]);
      this.checkOutput(graph, result, [n, ...shape]);
      out.set(result.data, i * width);
    }
    return tensor(out, [count, ...shape]);
  }

  // Normalised images (B, C, H, W) → features (B, D); with a context, embed_prefix then embed_suffix.
  async embed(images, context = null) {
    this.checkImages(images);
    if (context) return this.embedSuffix(await this.embedPrefix(images), context);
    return this.batched("embed", images, [this.featureDim]);
  }

  async embedPrefix(images) {
    return this.batched("embed_prefix", images, this.needContext().hidden);
  }

  async embedSuffix(hidden, context) {
    return this.batched("embed_suffix", hidden, [this.featureDim], EMBED_BATCH, { context: this.checkContext(context) });
  }

  async contextStep(hidden, labels, n, context, lr) {
    const spec = this.needContext();
    const feeds = { hidden, labels: int64(labels), onehot: onehot(labels, n), context: this.checkContext(context),
      lr_context: tensor(Float32Array.of(lr), [1]) };
    const [next, loss] = await this.run("context_step", feeds, ["new_context", "loss"]);
    this.checkOutput("context_step", next, [spec.dim]);
    return [next, this.checkLoss("context_step", loss)];
  }

  needContext() {
    if (!this.context) throw new ConfigError(`${this.label} has no context to adapt (its extractor is frozen)`);
    return this.context;
  }

  checkContext(context) {
    const dim = this.needContext().dim;
    if (context.shape.length !== 1 || context.shape[0] !== dim) {
      throw new DataError(`the context must have shape (${dim},), got (${context.shape.join(", ")})`);
    }
    return context;
  }

  checkImages(images) {
    const { channels, size } = this.inputSpec;
    const s = images.shape;
    if (s.length !== 4 || s[1] !== channels || s[2] !== size || s[3] !== size) {
      throw new DataError(`embed expects images (B, ${channels}, ${size}, ${size}), got shape (${s.join(", ")})`);
    }
  }

  // The head of an n-class task from support features (M, D) and labels (M) by the bundle's own rule.
  async initHead(features, labels, n) {
    const [weight, bias] = await this.run("init_head", { features, onehot: onehot(labels, n) }, ["weight", "bias"]);
    this.checkOutput("init_head", weight, [n, this.featureDim]);
    this.checkOutput("init_head", bias, [n]);
    return [weight, bias];
  }

  async adaptStep(weight, bias, features, labels, lrWeight, lrBias) {
    const feeds = { weight, bias, features, labels: int64(labels), lr_weight: lrWeight, lr_bias: lrBias };
    const [w, b, loss] = await this.run("adapt_step", feeds, ["new_weight", "new_bias", "loss"]);
    this.checkOutput("adapt_step", w, weight.shape);
    this.checkOutput("adapt_step", b, bias.shape);
    return [w, b, this.checkLoss("adapt_step", loss)];
  }

  initialState(n) {
    const s = this.manifest.state;
    return [tensor(new Float32Array(n * this.featureDim * s), [n, this.featureDim, s]), tensor(new Float32Array(n * s), [n, s])];
  }

  async learnedStep(weight, bias, features, labels, state) {
    const feeds = { weight, bias, features, labels: int64(labels), state_weight: state[0], state_bias: state[1] };
    const [w, b, loss, sw, sb] = await this.run("adapt_step", feeds,
      ["new_weight", "new_bias", "loss", "new_state_weight", "new_state_bias"]);
    for (const [array, like] of [[w, weight], [b, bias], [sw, state[0]], [sb, state[1]]]) this.checkOutput("adapt_step", array, like.shape);
    return [w, b, this.checkLoss("adapt_step", loss), [sw, sb]];
  }

  // predict.onnx: head and features (B, D) → log-probabilities (B, N) at temperature 1.
  async predictLogProba(weight, bias, features) {
    const [logp] = await this.run("predict", { weight, bias, features }, ["log_probabilities"]);
    this.checkOutput("predict", logp, [features.shape[0], weight.shape[0]]);
    return logp;
  }
}

// A shape as Python prints a tuple: (5,) (2, 3)
const tuple = (shape) => `(${shape.join(", ")}${shape.length === 1 ? "," : ""})`;

export function int64(labels) {
  return tensor(BigInt64Array.from(labels, (v) => BigInt(v)), [labels.length]);
}

export function onehot(labels, n) {
  const out = new Float32Array(labels.length * n);
  labels.forEach((label, i) => { out[i * n + label] = 1; });
  return tensor(out, [labels.length, n]);
}

async function checkDigests(manifest, files) {
  for (const [name, expected] of manifest.files) {
    const actual = await sha256Hex(files[name]);
    if (actual !== expected) {
      throw new BundleError(`${name}: sha256 ${actual} does not match manifest.json (${expected}); the file is corrupt or was changed`);
    }
  }
}

function graphInfo(manifest, name, files) {
  const spec = manifest.graphs[name];
  let info;
  try {
    info = readGraphInfo(files[spec.file]);
  } catch (error) {
    if (!(error instanceof ProtoError)) throw error;
    throw new BundleError(`${spec.file}: not an ONNX model (${error.message})`);
  }
  if (info.external.length) {
    throw new BundleError(`${spec.file}: tensor ${repr(info.external[0])} keeps its data outside the file (ONNX ` +
      "external data); a bundle must be self-contained");
  }
  const foreign = [...info.domains].filter((d) => !STANDARD_DOMAINS.has(d)).sort();
  if (foreign.length) {
    throw new BundleError(`${spec.file}: uses operators of the non-standard domain(s) ${foreign.join(", ")}; ` +
      "a bundle holds standard ONNX only");
  }
  for (const [side, actual] of [["inputs", info.inputs], ["outputs", info.outputs]]) {
    const declared = new Map(spec[side].map((t) => [t.name, t]));
    const found = new Map(actual.map((v) => [v.name, v]));
    const a = [...found.keys()].sort();
    const b = [...declared.keys()].sort();
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      throw new BundleError(`${spec.file}: graph ${side} ${repr(a)} do not match manifest.json graphs.${name}.${side} ${repr(b)}`);
    }
    for (const [key, value] of found) {
      const want = declared.get(key);
      if (value.dtype !== null && value.dtype !== want.dtype) {
        throw new BundleError(`${spec.file}: ${side.slice(0, -1)} ${repr(key)} is ${value.dtype}, manifest.json says ${want.dtype}`);
      }
      if (value.shape !== null && value.shape.length !== want.shape.length) {
        throw new BundleError(`${spec.file}: ${side.slice(0, -1)} ${repr(key)} has rank ${value.shape.length}, ` +
          `manifest.json says shape ${repr(want.shape)}`);
      }
    }
  }
  return info;
}

function loadInit(manifest, files) {
  const file = manifest.initFile;
  const declared = manifest.initArrays;
  let arrays;
  try {
    arrays = readNpz(files[file], file);
  } catch (error) {
    throw new BundleError(`${file}: not a readable .npz archive: ${error.message}`);
  }
  const a = Object.keys(arrays).sort();
  const b = Object.keys(declared).sort();
  if (JSON.stringify(a) !== JSON.stringify(b)) {
    throw new BundleError(`${file}: arrays ${repr(a)} do not match manifest.json init.arrays ${repr(b)}`);
  }
  const raw = Object.keys(arrays).filter((key) => arrays[key].raw).sort();
  if (raw.length) throw new BundleError(`${file}: not a readable .npz archive: member ${repr(raw[0])} is not a .npy array`);
  const out = {};
  for (const [key, array] of Object.entries(arrays)) {
    if (JSON.stringify(array.shape) !== JSON.stringify(declared[key])) {
      throw new BundleError(`${file}: ${key} has shape ${repr(array.shape)}, manifest.json says ${repr(declared[key])}`);
    }
    const single = array.dtype.startsWith("float") ? Float32Array.from(array.data) : null;
    if (!single || !single.every(Number.isFinite)) { // finite as float32 too: 1e300 is not
      throw new BundleError(`${file}: ${key} must hold finite floats, got ${array.dtype}`);
    }
    out[key] = tensor(single, array.shape);
  }
  return out;
}
