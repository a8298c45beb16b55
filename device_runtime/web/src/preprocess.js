// The manifest's input transform, exactly as the Python runtime does it with Pillow (device_runtime/preprocess.py):
// decoded RGBA pixels → L (Pillow's ITU-R 601-2 luma in fixed point) or RGB → resized with the manifest's Pillow
// filter (a port of Pillow's two-pass fixed-point resampling, libImaging/Resample.c, and of its affine NEAREST
// scaling, Geometry.c) → inverted when `invert` → float32 (x / 255 − mean) / std, layout (C, H, W).
import { DataError } from "./errors.js";
import { tensor } from "./bundle.js";

const PRECISION_BITS = 32 - 8 - 2;

const FILTERS = {
  box: [0.5, (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0)],
  bilinear: [1.0, (x) => {
    x = Math.abs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
  }],
  bicubic: [2.0, (x) => {
    const a = -0.5;
    x = Math.abs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
  }],
  lanczos: [3.0, (x) => (x >= -3.0 && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0)],
};

function sinc(x) {
  if (x === 0.0) return 1.0;
  x *= Math.PI;
  return Math.sin(x) / x;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output pixel, the first input pixel, how many, and the
// fixed-point weights.
function coefficients(inSize, outSize, filter) {
  const [support0, kernel] = FILTERS[filter];
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = support0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const w = kernel((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < ksize; x++) {
      const value = x < xmax ? (ww !== 0.0 ? k[x] / ww : k[x]) : 0;
      kk[xx * ksize + x] = value < 0 ? Math.trunc(-0.5 + value * (1 << PRECISION_BITS)) : Math.trunc(0.5 + value * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(value) {
  const v = Math.floor(value / (1 << PRECISION_BITS)); // an arithmetic shift
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// One horizontal pass (each output pixel from `ksize` weights along a row), rounding to 8 bits: rows
// `first`..`first + rows` of a (w × ·) plane → (outW × rows).
function horizontalPass(src, w, first, rows, outW, { ksize, bounds, kk }) {
  const out = new Uint8Array(outW * rows);
  for (let y = 0; y < rows; y++) {
    const row = (y + first) * w;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      let ss = 1 << (PRECISION_BITS - 1);
      for (let x = 0; x < xmax; x++) ss += src[row + x + xmin] * kk[xx * ksize + x];
      out[y * outW + xx] = clip8(ss);
    }
  }
  return out;
}

// One vertical pass: a (w × ·) plane whose row 0 is source row `first` → (w × outH).
function verticalPass(src, w, first, outH, { ksize, bounds, kk }) {
  const out = new Uint8Array(w * outH);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[yy * 2] - first;
    const ymax = bounds[yy * 2 + 1];
    for (let xx = 0; xx < w; xx++) {
      let ss = 1 << (PRECISION_BITS - 1);
      for (let y = 0; y < ymax; y++) ss += src[(y + ymin) * w + xx] * kk[yy * ksize + y];
      out[yy * w + xx] = clip8(ss);
    }
  }
  return out;
}

// One 8-bit plane (w × h) → (outW × outH), Pillow's ImagingResampleInner (Pillow 13): two passes, each rounding
// to 8 bits — horizontal first over only the rows the vertical pass reads, unless the height shrinks by more than
// twice as many pixels as the width, when the vertical pass runs first. (Pillow before 13 always ran the horizontal
// pass first, so two Pillow releases can differ by a level where the order changed.)
function resamplePlane(plane, w, h, outW, outH, filter) {
  const needH = outW !== w;
  const needV = outH !== h;
  const horizontalFirst = !(h - outH > 0 && h - outH > (w - outW) * 2);
  const vertical = needV || (needH && horizontalFirst) ? coefficients(h, outH, filter) : null;
  const horizontal = needH ? coefficients(w, outW, filter) : null;
  if (horizontalFirst) {
    let src = plane;
    let first = 0;
    if (needH) {
      first = vertical.bounds[0];
      const last = vertical.bounds[outH * 2 - 2] + vertical.bounds[outH * 2 - 1];
      src = horizontalPass(plane, w, first, last - first, outW, horizontal);
    }
    return needV ? verticalPass(src, needH ? outW : w, first, outH, vertical) : src;
  }
  const src = needV ? verticalPass(plane, w, 0, outH, vertical) : plane;
  return needH ? horizontalPass(src, w, 0, outH, outW, horizontal) : src;
}

// Pillow's NEAREST resize: ImagingScaleAffine, its source coordinates accumulated in double precision.
function nearestPlane(plane, w, h, outW, outH) {
  const index = (inSize, outSize) => {
    const scale = inSize / outSize;
    const table = new Int32Array(outSize).fill(-1);
    let o = scale * 0.5;
    for (let x = 0; x < outSize; x++) {
      const i = o < 0 ? -1 : Math.trunc(o);
      if (i >= 0 && i < inSize) table[x] = i;
      o += scale;
    }
    return table;
  };
  const xs = index(w, outW);
  const ys = index(h, outH);
  const out = new Uint8Array(outW * outH);
  for (let y = 0; y < outH; y++) {
    if (ys[y] < 0) continue;
    for (let x = 0; x < outW; x++) if (xs[x] >= 0) out[y * outW + x] = plane[ys[y] * w + xs[x]];
  }
  return out;
}

export function resize(plane, w, h, outW, outH, filter) {
  if (w === outW && h === outH) return plane;
  return filter === "nearest" ? nearestPlane(plane, w, h, outW, outH) : resamplePlane(plane, w, h, outW, outH, filter);
}

// Decoded pixels { width, height, data: RGBA bytes } → uint8 (C, H, W) by the manifest's input spec.
export function toUint8(pixels, spec, name = "image") {
  const { width, height, data } = pixels;
  if (!(width >= 1 && height >= 1) || data.length !== width * height * 4) {
    throw new DataError(`cannot read image ${name}: expected ${width}x${height} RGBA pixels`);
  }
  const count = width * height;
  let planes;
  if (spec.channels === 1) {
    const luma = new Uint8Array(count);
    for (let i = 0; i < count; i++) {
      luma[i] = (data[4 * i] * 19595 + data[4 * i + 1] * 38470 + data[4 * i + 2] * 7471 + 0x8000) >>> 16;
    }
    planes = [luma];
  } else {
    planes = [0, 1, 2].map((c) => {
      const plane = new Uint8Array(count);
      for (let i = 0; i < count; i++) plane[i] = data[4 * i + c];
      return plane;
    });
  }
  const size = spec.size;
  const out = new Uint8Array(spec.channels * size * size);
  planes.forEach((plane, c) => {
    const resized = resize(plane, width, height, size, size, spec.resize);
    for (let i = 0; i < size * size; i++) out[c * size * size + i] = spec.invert ? 255 - resized[i] : resized[i];
  });
  return out;
}

// uint8 images (each C·H·W) → the normalised float32 batch (B, C, H, W), in float32 like training.
export function normalize(images, spec) {
  const { channels, size } = spec;
  const plane = size * size;
  const out = new Float32Array(images.length * channels * plane);
  const mean = spec.mean.map(Math.fround);
  const std = spec.std.map(Math.fround);
  images.forEach((image, b) => {
    for (let c = 0; c < channels; c++) {
      for (let i = 0; i < plane; i++) {
        const at = (b * channels + c) * plane + i;
        out[at] = Math.fround(Math.fround(Math.fround(image[c * plane + i] / 255) - mean[c]) / std[c]);
      }
    }
  });
  return tensor(out, [images.length, channels, size, size]);
}

export function preprocess(pixelsList, spec) {
  return normalize(pixelsList.map((p, i) => toUint8(p, spec, p.name || `#${i}`)), spec);
}
