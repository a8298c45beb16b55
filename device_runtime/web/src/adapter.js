// `Adapter`: learn new classes from a few labelled images with the bundle's exported graphs — the Python
// `Adapter`'s loop (device_runtime/adapter.py), step for step: support images embedded once (or kept as images when
// their features depend on the whole set: batch statistics, a context), the head initialised by init_head.onnx,
// `steps` runs of adapt_step.onnx (the loss of the last head costs one more run), a step that goes non-finite
// rolled back, then predict.onnx at the manifest's calibrated temperature.
import { BundleError, ConfigError, DataError } from "./errors.js";
import { tensor } from "./bundle.js";
import { BACKGROUND, isPrintable, LIMITS } from "./manifest.js";
import * as openSet from "./open_set.js";
import { preprocess } from "./preprocess.js";

export const MAX_STEPS = LIMITS["adapt.steps"][1];

// softmax(T · log p) in float64 (exact: log p differs from the logits by a constant per row), as float32.
export function softmaxAt(logp, temperature) {
  const [b, n] = logp.shape;
  const out = new Float32Array(b * n);
  for (let i = 0; i < b; i++) {
    let max = -Infinity;
    const row = new Float64Array(n);
    for (let j = 0; j < n; j++) {
      row[j] = logp.data[i * n + j] * temperature;
      if (row[j] > max) max = row[j];
    }
    let sum = 0;
    for (let j = 0; j < n; j++) {
      row[j] = Math.exp(row[j] - max);
      sum += row[j];
    }
    for (let j = 0; j < n; j++) out[i * n + j] = row[j] / sum;
  }
  return tensor(out, [b, n]);
}

// The calibrated temperature for N classes with K examples each (device_runtime/calibration.py).
export function temperatureAt(calibration, ways, shots) {
  if (!calibration) return 1.0;
  const clamp = (v, [lo, hi]) => Math.min(Math.max(v, lo), hi);
  const n = clamp(ways, calibration.ways);
  const k = clamp(shots, calibration.shots);
  return Math.exp(calibration.logTemperature + calibration.perLogWays * Math.log(n) + calibration.perLogShots * Math.log(k));
}

const finite = (array) => array.data.every(Number.isFinite);

function concat(arrays, rest) {
  const count = arrays.reduce((a, x) => a + x.shape[0], 0);
  const out = new Float32Array(arrays.reduce((a, x) => a + x.data.length, 0));
  let at = 0;
  for (const x of arrays) {
    out.set(x.data, at);
    at += x.data.length;
  }
  return tensor(out, [count, ...rest]);
}

function checkFinite(array, what, hint) {
  const per = array.data.length / Math.max(array.shape[0], 1);
  for (let i = 0; i < array.shape[0]; i++) {
    for (let j = 0; j < per; j++) {
      if (!Number.isFinite(array.data[i * per + j])) {
        throw new DataError(`${what} gave non-finite values (NaN or inf) for image #${i}; ${hint}`);
      }
    }
  }
}

export class Adapter {
  constructor(bundle) {
    this.bundle = bundle;
    this.support = new Map(); // class → features (K, D), or the normalised images (K, C, H, W) when kept
    this.added = {};
    this.head = null;
    this.result = null;
    this.context = null;
    this.embedded = null; // [classes joined, features] of the kept images
    this.changed = false;
  }

  get classes() {
    return [...this.support.keys()];
  }

  get examples() {
    return Object.fromEntries([...this.support].map(([name, x]) => [name, x.shape[0]]));
  }

  // A class's labelled images: decoded pixels ({width, height, data: RGBA}) or a normalised float batch.
  async addExamples(className, images, { extend = false } = {}) {
    if (typeof className !== "string" || !className.trim()) throw new DataError(`a class needs a non-empty name, got '${className}'`);
    if (!isPrintable(className)) throw new DataError(`class name '${className}' has a control character; names are printed one per line`);
    if (this.support.has(className) && !extend) {
      throw new DataError(`class '${className}' was already added (${this.support.get(className).shape[0]} examples); class names must be unique`);
    }
    const batch = this.asBatch(images);
    if (batch.shape[0] === 0) throw new DataError(`class '${className}' has no images`);
    checkFinite(batch, `class '${className}': preprocessing`, "check the images and the bundle's input mean/std");
    let examples;
    if (this.bundle.keepsImages) {
      this.bundle.checkImages(batch);
      examples = batch;
    } else {
      examples = await this.bundle.embed(batch);
      checkFinite(examples, `class '${className}': embed.onnx`, "the bundle's embedding graph is broken");
    }
    if (this.support.has(className)) examples = concat([this.support.get(className), examples], examples.shape.slice(1));
    else if (!(className in this.added)) this.added[className] = new Date().toISOString().replace(/\.\d+Z$/, "+00:00");
    this.support.set(className, examples);
    this.changed = true;
    this.embedded = null;
  }

  removeClass(className) {
    if (!this.support.has(className)) throw new DataError(`no class '${className}' to remove; the classes are: ${this.classes.join(", ")}`);
    this.support.delete(className);
    delete this.added[className];
    this.changed = true;
    this.embedded = null;
  }

  asBatch(images) {
    if (images && images.data instanceof Float32Array && images.shape?.length === 4) return images;
    return preprocess(images, this.bundle.inputSpec);
  }

  supportExamples() {
    if (this.support.size === 0) throw new DataError("no classes to adapt to: call addExamples() for at least 2 classes first");
    if (this.support.size < 2) throw new DataError(`adaptation needs at least 2 classes, got 1 ('${this.classes[0]}')`);
    const labels = [];
    [...this.support.values()].forEach((x, label) => { for (let i = 0; i < x.shape[0]; i++) labels.push(label); });
    const values = [...this.support.values()];
    return [concat(values, values[0].shape.slice(1)), labels];
  }

  async supportSet() {
    const [examples, labels] = this.supportExamples();
    if (!this.bundle.keepsImages) return [examples, labels];
    const key = this.classes.join("\n");
    if (!this.embedded || this.embedded[0] !== key) {
      const features = await this.bundle.embed(examples, this.context);
      checkFinite(features, "support set: embed.onnx", "the bundle's embedding graph is broken");
      this.embedded = [key, features];
    }
    return [this.embedded[1], labels];
  }

  stepFunction(lr, n) {
    const { manifest } = this.bundle;
    if (manifest.rule === "sgd") {
      const d = this.bundle.featureDim;
      let lrWeight;
      let lrBias;
      if (manifest.learnedLr) {
        lrWeight = tensor(this.bundle.init.lr_weight.data.map((v) => Math.fround(v * Math.fround(lr))), [1, d]);
        lrBias = tensor(this.bundle.init.lr_bias.data.map((v) => Math.fround(v * Math.fround(lr))), [1]);
      } else {
        lrWeight = tensor(new Float32Array(d).fill(lr), [1, d]);
        lrBias = tensor(Float32Array.of(lr), [1]);
      }
      return (w, b, f, y) => this.bundle.adaptStep(w, b, f, y, lrWeight, lrBias);
    }
    let state = this.bundle.initialState(n);
    return async (w, b, f, y) => {
      const [nw, nb, loss, next] = await this.bundle.learnedStep(w, b, f, y, state);
      state = next;
      return [nw, nb, loss];
    };
  }

  options(steps, lr) {
    const { manifest } = this.bundle;
    steps = steps ?? manifest.steps;
    if (lr !== undefined && lr !== null && manifest.rule !== "sgd") {
      throw new ConfigError(`${this.bundle.label} adapts with a learned update rule (${manifest.rule}), which has no step size: leave lr unset`);
    }
    lr = lr ?? (manifest.learnedLr ? 1.0 : manifest.lr);
    if (!Number.isInteger(steps) || steps < 0 || steps > MAX_STEPS) throw new ConfigError(`steps must be an integer from 0 to ${MAX_STEPS}, got ${steps}`);
    if (typeof lr !== "number" || !Number.isFinite(lr) || lr <= 0) throw new ConfigError(`lr must be a finite number > 0, got ${lr}`);
    return [steps, lr];
  }

  // Initialise the head for every class and run the exported step `steps` times (default: the manifest's).
  async adapt({ steps, lr, contextSteps, contextLr, onProgress } = {}) {
    [steps, lr] = this.options(steps, lr);
    const progress = onProgress || (() => {});
    let contextLosses = [];
    const n = this.support.size;
    if (this.bundle.context) {
      const spec = this.bundle.context;
      contextSteps = contextSteps ?? spec.steps;
      const rate = contextLr ?? spec.lr;
      const [images, labels] = this.supportExamples();
      const hidden = await this.bundle.embedPrefix(images);
      let context = tensor(new Float32Array(spec.dim), [spec.dim]);
      for (let k = 0; k < contextSteps; k++) {
        const [next, loss] = await this.bundle.contextStep(hidden, labels, n, context, rate);
        if (!(Number.isFinite(loss) && finite(next))) {
          throw new BundleError(`context adaptation diverged at step ${k + 1} of ${contextSteps} (non-finite loss or context with lr ${rate}); nothing was adapted — try a smaller context lr`);
        }
        contextLosses.push(loss);
        context = next;
        progress({ stage: "context", step: k + 1, of: contextSteps, loss });
      }
      const features = await this.bundle.embedSuffix(hidden, context);
      checkFinite(features, "support set: embed_suffix.onnx", "the bundle's embedding graph is broken");
      this.context = context;
      this.embedded = [this.classes.join("\n"), features];
    } else if (contextSteps || (contextLr !== undefined && contextLr !== null)) {
      throw new ConfigError(`${this.bundle.label} has no context to adapt (its extractor is frozen): leave contextSteps and contextLr unset`);
    }
    const [features, labels] = await this.supportSet();
    let [weight, bias] = await this.bundle.initHead(features, labels, n);
    const step = this.stepFunction(lr, n);
    const losses = [];
    let good = null;
    for (let k = 0; k <= steps; k++) {
      if (!finite(weight) || !finite(bias)) this.rollBack(good, losses, steps, lr);
      const [nextWeight, nextBias, loss] = await step(weight, bias, features, labels);
      if (!Number.isFinite(loss)) this.rollBack(good, losses, steps, lr);
      losses.push(loss);
      good = [weight, bias];
      progress({ stage: "head", step: k, of: steps, loss });
      if (k === steps) break;
      [weight, bias] = [nextWeight, nextBias];
    }
    const result = { classes: this.classes, support: labels.length, steps, lr, losses: losses.slice(0, -1),
      finalLoss: losses[losses.length - 1], contextSteps: contextLosses.length, contextLosses, variants: 0 };
    this.setHead(good, result);
    return result;
  }

  rollBack(good, losses, steps, lr) {
    if (!good) {
      throw new BundleError(`adaptation diverged: the loss of the initial head is not finite (lr ${lr}); nothing finite to roll back to — check the bundle and the support images`);
    }
    const done = losses.length - 1;
    this.setHead(good, { classes: this.classes, support: this.supportExamples()[1].length, steps: done, lr,
      losses: losses.slice(0, -1), finalLoss: losses[losses.length - 1], contextSteps: 0, contextLosses: [], variants: 0 });
    throw new BundleError(`adaptation diverged at step ${done + 1} of ${steps} (non-finite loss or parameters with lr ${lr}); rolled back to the last finite state, after ${done} step(s) with loss ${losses[losses.length - 1].toFixed(4)}; try a smaller lr`);
  }

  setHead(head, result) {
    this.head = head;
    this.result = result;
    this.changed = false;
  }

  adaptedHead() {
    if (!this.head || !this.result) throw new ConfigError("nothing adapted yet: call addExamples() for each class, then adapt()");
    const added = this.classes.filter((c) => !this.result.classes.includes(c));
    if (added.length) throw new ConfigError(`class(es) ${added.join(", ")} were added after adapt(); call adapt() again`);
    if (this.changed) throw new ConfigError("examples were added or classes removed after adapt(); call adapt() again");
    return this.head;
  }

  get shots() {
    return (this.result.support - this.result.variants) / this.result.classes.length;
  }

  // Images → { labels, probabilities (B × N, over result.classes), scores, threshold }. With `reject` ("auto" or a
  // score threshold) an image of none of the classes is labelled "unknown" (open_set.js).
  async predict(images, { reject = null } = {}) {
    const [weight, bias] = this.adaptedHead();
    const batch = this.asBatch(images);
    if (this.bundle.batchStatistics && batch.shape[0] < 2) {
      throw new DataError(`${this.bundle.label} normalises with batch statistics (transductive BatchNorm): predict needs at least 2 images in one call, got ${batch.shape[0]}`);
    }
    checkFinite(batch, "predict: preprocessing", "check the images and the bundle's input mean/std");
    const features = await this.bundle.embed(batch, this.context);
    checkFinite(features, "predict: embed.onnx", "the bundle's embedding graph is broken");
    const logp = await this.bundle.predictLogProba(weight, bias, features);
    const probs = softmaxAt(logp, temperatureAt(this.bundle.manifest.calibration, weight.shape[0], this.shots));
    checkFinite(probs, "predict.onnx", "the adapted head or the bundle is broken (adapt again)");
    const n = weight.shape[0];
    const [support, supportLabels] = await this.supportSet();
    const background = this.bundle.init[BACKGROUND] ?? null;
    const scores = openSet.scores(features, openSet.prototypes(support, supportLabels, n), background);
    const limit = openSet.threshold(reject, support, supportLabels, n, this.bundle.manifest.openSet?.thresholds,
      background, this.shots); // variants are not shots
    if (limit !== null && this.result.classes.includes(openSet.UNKNOWN)) {
      throw new ConfigError(`a class is named '${openSet.UNKNOWN}', the label of a rejected image: rename it to predict with reject`);
    }
    const rows = [];
    const labels = [];
    for (let i = 0; i < batch.shape[0]; i++) {
      const row = Array.from(probs.data.subarray(i * n, (i + 1) * n));
      rows.push(row);
      let best = 0;
      for (let j = 1; j < n; j++) if (row[j] > row[best]) best = j;
      labels.push(limit === null || scores[i] >= limit ? this.result.classes[best] : openSet.UNKNOWN);
    }
    return { labels, probabilities: rows, classes: [...this.result.classes], scores, threshold: limit };
  }

  // The adapted state as structured-cloneable data (IndexedDB keeps it; `fromState` restores it).
  toState() {
    const [weight, bias] = this.adaptedHead();
    return { schema: "mtl-web-adapted/1", bundleSha256: this.bundle.sha256, result: this.result, added: this.added,
      weight, bias, context: this.context,
      support: [...this.support].map(([name, x]) => ({ name, data: x.data, shape: x.shape })) };
  }

  static fromState(bundle, state) {
    if (state?.schema !== "mtl-web-adapted/1") throw new BundleError("the saved state is not an mtl-web-adapted/1 state; adapt again");
    if (state.bundleSha256 !== bundle.sha256) throw new BundleError("the saved state was adapted with another bundle; adapt again");
    const adapter = new Adapter(bundle);
    for (const { name, data, shape } of state.support) adapter.support.set(name, tensor(data, shape));
    adapter.added = state.added;
    adapter.context = state.context;
    adapter.setHead([state.weight, state.bias], state.result);
    return adapter;
  }
}
