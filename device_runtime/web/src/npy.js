// `init.npz` without pickles: the zip's `.npy` members, float arrays only (numpy's format, version 1-3). An
// object array (numpy would need pickle to read it) is refused, as `np.load(..., allow_pickle=False)` refuses it.
import { ZipSource } from "./archive.js";

export class NpyError extends Error {}

const DTYPES = { "<f4": [Float32Array, 4], "<f8": [Float64Array, 8], "<f2": [null, 2], "<i8": [BigInt64Array, 8],
  "<i4": [Int32Array, 4], "|u1": [Uint8Array, 1], "|b1": [Uint8Array, 1] };
const NUMPY_NAMES = { "<f4": "float32", "<f8": "float64", "<f2": "float16", "<i8": "int64", "<i4": "int32",
  "|u1": "uint8", "|b1": "bool" };

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

// One .npy file → { dtype (numpy's name), shape, data: Float64Array (C order) }.
export function readNpy(bytes) {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || !magic.every((b, i) => bytes[i] === b)) throw new NpyError("the file is not a .npy array");
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const [headerLength, start] = major === 1 ? [view.getUint16(8, true), 10] : [view.getUint32(8, true), 12];
  if (![1, 2, 3].includes(major) || start + headerLength > bytes.length) throw new NpyError(`unsupported .npy version ${major}`);
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(bytes.subarray(start, start + headerLength));
  const descr = /'descr':\s*'([^']*)'/.exec(header);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeText) {
    if (/'descr':\s*[[(]/.test(header)) throw new NpyError("structured arrays are not supported");
    throw new NpyError(`cannot parse the .npy header ${header.trim().slice(0, 80)}`);
  }
  if (descr[1].includes("O")) throw new NpyError("Object arrays cannot be loaded when allow_pickle=False");
  const shape = shapeText[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (!shape.every((d) => Number.isInteger(d) && d >= 0)) throw new NpyError("bad shape in the .npy header");
  const type = DTYPES[descr[1]];
  if (!type) throw new NpyError(`unsupported dtype ${descr[1]}`);
  const count = shape.reduce((a, b) => a * b, 1);
  const body = bytes.subarray(start + headerLength);
  if (body.length < count * type[1]) throw new NpyError("the array data is truncated");
  const raw = body.slice(0, count * type[1]);
  let values;
  if (type[0] === null) values = Array.from(new Uint16Array(raw.buffer), halfToFloat);
  else values = Array.from(new type[0](raw.buffer), Number);
  let data = Float64Array.from(values);
  if (fortran[1] === "True" && shape.length > 1) data = fromFortran(data, shape);
  return { dtype: NUMPY_NAMES[descr[1]], shape, data };
}

function fromFortran(data, shape) {
  const out = new Float64Array(data.length);
  const n = shape.length;
  const index = new Array(n).fill(0);
  for (let c = 0; c < data.length; c++) {
    let f = 0;
    let stride = 1;
    for (let k = 0; k < n; k++) {
      f += index[k] * stride;
      stride *= shape[k];
    }
    out[c] = data[f];
    for (let k = n - 1; k >= 0; k--) {
      index[k] += 1;
      if (index[k] < shape[k]) break;
      index[k] = 0;
    }
  }
  return out;
}

// An .npz (zip of .npy) → name → array.
export function readNpz(bytes, label) {
  let zip;
  try {
    zip = new ZipSource(bytes, label);
  } catch (error) {
    throw new NpyError(error.message.replace(`${label}: `, ""));
  }
  const out = {};
  for (const name of zip.members.keys()) {
    const key = name.endsWith(".npy") ? name.slice(0, -4) : name;
    out[key] = readNpy(zip.read(name));
  }
  return out;
}
