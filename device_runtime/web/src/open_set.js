// Open-set recognition: is an image one of the adapted classes at all? The Python runtime's rule
// (device_runtime/open_set.py): the score of an image is its cosine similarity to the nearest class prototype (the
// unit mean of a class's unit support features), minus its mean similarity to the BACKGROUND_TOP nearest rows of
// the bundle's background (init.npz open_set_background) when it has one; `auto` is the bundle's calibrated threshold at this support set's
// shots (linear in log K between the calibrated K, clamped), or without one the highest similarity of a support
// image to ANOTHER class's prototype (leave-one-class-out). Computed in float64, as numpy does.
import { ConfigError } from "./errors.js";

export const UNKNOWN = "unknown";
export const BACKGROUND_TOP = 3;
export const SAME_CLASS = 0.95; // a background row this similar to a prototype is that class itself

function unitRows(array) {
  const [m, d] = array.shape;
  const out = new Float64Array(m * d);
  for (let i = 0; i < m; i++) {
    let norm = 0;
    for (let j = 0; j < d; j++) norm += array.data[i * d + j] ** 2;
    norm = Math.max(Math.sqrt(norm), 1e-12);
    for (let j = 0; j < d; j++) out[i * d + j] = array.data[i * d + j] / norm;
  }
  return { data: out, shape: [m, d] };
}

export function prototypes(features, labels, n) {
  const unit = unitRows(features);
  const d = features.shape[1];
  const sums = new Float64Array(n * d);
  const counts = new Float64Array(n);
  labels.forEach((c, i) => {
    counts[c] += 1;
    for (let j = 0; j < d; j++) sums[c * d + j] += unit.data[i * d + j];
  });
  for (let c = 0; c < n; c++) for (let j = 0; j < d; j++) sums[c * d + j] /= counts[c];
  return unitRows({ data: sums, shape: [n, d] });
}

function similarities(features, protos) {
  const unit = unitRows(features);
  const [m, d] = unit.shape;
  const n = protos.shape[0];
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let c = 0; c < n; c++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += unit.data[i * d + j] * protos.data[c * d + j];
      out[i * n + c] = s;
    }
  }
  return out;
}

// Each image's mean similarity to its BACKGROUND_TOP nearest background rows (zeros without a background), summed
// in ascending order as numpy's mean of the sorted tail does.
function backgroundNear(features, background) {
  const m = features.shape[0];
  if (!background || !background.shape[0]) return new Float64Array(m);
  const c = background.shape[0];
  const k = Math.min(BACKGROUND_TOP, c);
  const sims = similarities(features, unitRows(background));
  return Float64Array.from({ length: m }, (_, i) => {
    const tail = Array.from(sims.subarray(i * c, (i + 1) * c)).sort((a, b) => a - b).slice(c - k);
    return tail.reduce((sum, v) => sum + v, 0) / k;
  });
}

// The background rows that are none of the adapted classes (no more similar than SAME_CLASS to any prototype).
function notAdapted(protos, background) {
  if (!background || !background.shape[0]) return background;
  const [c, d] = background.shape;
  const n = protos.shape[0];
  const sims = similarities(background, protos); // (C, n): the rows' unit vectors against the unit prototypes
  const keep = [];
  for (let r = 0; r < c; r++) if (Math.max(...sims.subarray(r * n, (r + 1) * n)) <= SAME_CLASS) keep.push(r);
  const out = new Float64Array(keep.length * d);
  keep.forEach((r, i) => out.set(background.data.subarray(r * d, (r + 1) * d), i * d));
  return { data: out, shape: [keep.length, d] };
}

// Each image's score: its similarity to its nearest prototype, relative to the background (less the adapted
// classes) when there is one.
export function scores(features, protos, background = null) {
  const n = protos.shape[0];
  const sims = similarities(features, protos);
  const near = backgroundNear(features, notAdapted(protos, background));
  return Array.from({ length: features.shape[0] }, (_, i) => Math.max(...sims.subarray(i * n, (i + 1) * n)) - near[i]);
}

// The page's "unknown" box when a bundle opens: on for a bundle calibrated against a background (what
// `mtl predict` does without --reject), else off.
export function defaultReject(section) {
  return section && Object.prototype.hasOwnProperty.call(section, "background") ? "auto" : "off";
}

export function threshold(reject, features, labels, n, calibrated, background = null, shots = null) {
  if (reject === null || reject === undefined || reject === "off") return null;
  if (reject === "auto") {
    if (calibrated && Object.keys(calibrated).length) {
      const points = Object.entries(calibrated).map(([k, v]) => [Math.log(Number(k)), Number(v)]).sort((a, b) => a[0] - b[0]);
      const x = Math.log(Math.max(shots ?? labels.length / Math.max(n, 1), 1e-9));
      if (x <= points[0][0]) return points[0][1];
      for (let i = 1; i < points.length; i++) {
        if (x <= points[i][0]) {
          const [x0, y0] = points[i - 1];
          const [x1, y1] = points[i];
          return y0 + ((x - x0) * (y1 - y0)) / (x1 - x0);
        }
      }
      return points[points.length - 1][1];
    }
    const protos = prototypes(features, labels, n);
    const sims = similarities(features, protos);
    const near = backgroundNear(features, notAdapted(protos, background));
    let best = -Infinity;
    labels.forEach((own, i) => {
      for (let c = 0; c < n; c++) if (c !== own) best = Math.max(best, sims[i * n + c] - near[i]);
    });
    return best;
  }
  if (typeof reject !== "number" || !(reject >= -2 && reject <= 2)) {
    throw new ConfigError(`reject must be 'off', 'auto' or a score from -2 to 2, got ${reject}`);
  }
  return reject;
}
