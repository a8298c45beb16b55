// `init.npz` without pickles: the zip's `.npy` members, float arrays only (numpy's format, version 1-3). An
// object array (numpy would need pickle to read it) is refused, as `np.load(..., allow_pickle=False)` refuses it.
import { ZipSource } from "./archive.js";

export class NpyError extends Error {}

// dtype → (DataView getter, bytes, numpy's name); either byte order
const DTYPES = { f4: ["getFloat32", 4, "float32"], f8: ["getFloat64", 8, "float64"], f2: ["half", 2, "float16"],
  i8: ["getBigInt64", 8, "int64"], i4: ["getInt32", 4, "int32"], u1: ["getUint8", 1, "uint8"], b1: ["getUint8", 1, "bool"] };

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
  const keys = [...header.matchAll(/'([^']*)'\s*:/g)].map((m) => m[1]).sort();
  if (keys.join() !== "descr,fortran_order,shape") {
    throw new NpyError(`Header does not contain the correct keys: [${keys.map((k) => `'${k}'`).join(", ")}]`);
  }
  const shape = shapeText[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (!shape.every((d) => Number.isInteger(d) && d >= 0)) throw new NpyError("bad shape in the .npy header");
  const order = descr[1][0];
  const type = DTYPES[descr[1].slice(1)];
  if (!type || !"<>|=".includes(order)) throw new NpyError(`unsupported dtype ${descr[1]}`);
  const [getter, size] = type;
  const little = order !== ">";
  const count = shape.reduce((a, b) => a * b, 1);
  const body = bytes.subarray(start + headerLength);
  if (body.length < count * size) throw new NpyError("the array data is truncated");
  const cells = new DataView(body.buffer, body.byteOffset, count * size);
  const values = new Array(count);
  for (let i = 0; i < count; i++) {
    values[i] = getter === "half" ? halfToFloat(cells.getUint16(i * 2, little)) : Number(cells[getter](i * size, little));
  }
  let data = Float64Array.from(values);
  if (fortran[1] === "True" && shape.length > 1) data = fromFortran(data, shape);
  return { dtype: type[2], shape, data };
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

// An .npz (zip of .npy) → name → array, as numpy's NpzFile names them: every entry, ".npy" dropped; an entry that
// is not a .npy file comes back as { raw: true } (numpy gives its bytes), for the caller to refuse.
export function readNpz(bytes, label) {
  let zip;
  try {
    zip = new ZipSource(bytes, label);
  } catch (error) {
    throw new NpyError(error.message.replace(`${label}: `, ""));
  }
  const out = Object.create(null); // an entry may be named "__proto__.npy"
  for (const name of zip.names) {
    const key = name.endsWith(".npy") ? name.slice(0, -4) : name;
    out[key] = name.endsWith(".npy") && zip.members.has(name) ? readNpy(zip.read(name)) : { raw: true };
  }
  return out;
}
