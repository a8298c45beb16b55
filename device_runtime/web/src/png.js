// A PNG decoder that gives Pillow's pixels exactly (libImaging's PNG reading as mtl's preprocessing then uses it):
// every colour type and bit depth, palettes, transparency kept as stored colour (a canvas would premultiply it to
// black), Adam7 interlacing, chunk CRCs checked — and no colour management or EXIF rotation, which Pillow does not
// apply either. 16-bit colour is cut to its high byte as Pillow does; 16-bit grey is Pillow's mode I;16, which mtl
// refuses (it would be clipped). Returns RGBA bytes { width, height, data } for preprocess.js.
import { Unzlib } from "fflate";
import { crc32 } from "./archive.js";
import { DataError } from "./errors.js";

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const CHANNELS = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];

export const isPng = (bytes) => bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);

export function decodePng(bytes, name, maxPixels) {
  const fail = (why) => new DataError(`cannot read image ${name}: ${why}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let header = null;
  let palette = null;
  let transparency = null;
  const idat = [];
  for (let at = 8; ;) {
    if (at + 12 > bytes.length) throw fail("truncated PNG file");
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    if (at + 12 + length > bytes.length) throw fail("truncated PNG file");
    const body = bytes.subarray(at + 8, at + 8 + length);
    if (crc32(bytes.subarray(at + 4, at + 8 + length)) !== view.getUint32(at + 8 + length)) {
      throw fail(`broken PNG file (bad CRC in the ${type} chunk)`);
    }
    if (type === "IHDR") {
      const h = new DataView(body.buffer, body.byteOffset, body.byteLength);
      header = { width: h.getUint32(0), height: h.getUint32(4), depth: body[8], color: body[9], interlace: body[12] };
      if (header.width * header.height > maxPixels) {
        throw fail(`${header.width}x${header.height} pixels is more than the ${maxPixels.toLocaleString("en")} an image may have`);
      }
      if (!(header.color in CHANNELS) || ![1, 2, 4, 8, 16].includes(header.depth) || body[10] !== 0 || body[11] !== 0) {
        throw fail("unknown PNG colour type, bit depth or method");
      }
      if (header.depth === 16 && header.color === 0) {
        throw fail("ValueError: mode I;16 has 16/32-bit or float samples, which would be clipped; save it as an 8-bit image (L or RGB)");
      }
    } else if (type === "PLTE") palette = body.slice();
    else if (type === "tRNS") transparency = body.slice();
    else if (type === "IDAT") idat.push(body);
    else if (type === "IEND") break;
    at += 12 + length;
  }
  if (!header || !header.width || !header.height) throw fail("no image header (IHDR)");
  if (header.color === 3 && !palette) throw fail("a palette image without a palette");
  const { width, height, depth, color, interlace } = header;
  const channels = CHANNELS[color];
  const bitsPerPixel = channels * depth;
  const bpp = Math.max(1, bitsPerPixel >> 3);
  const passes = interlace ? ADAM7 : [[0, 0, 1, 1]];
  const sizes = passes.map(([x0, y0, dx, dy]) => [Math.ceil((width - x0) / dx), Math.ceil((height - y0) / dy)]);
  const expected = sizes.reduce((sum, [w, h]) => sum + (w && h ? h * (1 + Math.ceil((w * bitsPerPixel) / 8)) : 0), 0);
  const raw = inflate(idat, expected, fail);
  const out = new Uint8Array(width * height * 4);
  let offset = 0;
  passes.forEach(([x0, y0, dx, dy], p) => {
    const [w, h] = sizes[p];
    if (!w || !h) return;
    const stride = Math.ceil((w * bitsPerPixel) / 8);
    let previous = new Uint8Array(stride);
    for (let y = 0; y < h; y++) {
      const filter = raw[offset];
      const line = raw.slice(offset + 1, offset + 1 + stride);
      offset += 1 + stride;
      unfilter(filter, line, previous, bpp, fail);
      writeRow(out, ((y0 + y * dy) * width + x0) * 4, dx * 4, line, w, header, palette, transparency);
      previous = line;
    }
  });
  return { width, height, data: out, name };
}

function inflate(chunks, expected, fail) {
  const out = new Uint8Array(expected);
  let total = 0;
  const inflater = new Unzlib((chunk) => { // IDAT is a zlib stream
    if (total + chunk.length > expected) throw fail("the image data is longer than its size says");
    out.set(chunk, total);
    total += chunk.length;
  });
  try {
    chunks.forEach((chunk, i) => inflater.push(chunk, i === chunks.length - 1));
    if (!chunks.length) throw new Error("no image data (IDAT)");
  } catch (error) {
    if (error instanceof DataError) throw error;
    throw fail(`broken PNG file (${error.message})`);
  }
  if (total !== expected) throw fail("image file is truncated");
  return out;
}

function unfilter(filter, line, previous, bpp, fail) {
  for (let i = 0; i < line.length; i++) {
    const a = i >= bpp ? line[i - bpp] : 0;
    const b = previous[i];
    const c = i >= bpp ? previous[i - bpp] : 0;
    if (filter === 0) return;
    if (filter === 1) line[i] = (line[i] + a) & 0xff;
    else if (filter === 2) line[i] = (line[i] + b) & 0xff;
    else if (filter === 3) line[i] = (line[i] + ((a + b) >> 1)) & 0xff;
    else if (filter === 4) {
      const p = a + b - c;
      const pa = Math.abs(p - a);
      const pb = Math.abs(p - b);
      const pc = Math.abs(p - c);
      line[i] = (line[i] + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c)) & 0xff;
    } else throw fail(`broken PNG file (unknown row filter ${filter})`);
  }
}

// One row as Pillow reads it → RGBA at out[at], out[at + step], …: grey of 1, 2 or 4 bits scales to 0–255, 16-bit
// samples keep their high byte, and transparency (tRNS) does not change the stored colour. One loop per kind of
// row, no allocation per pixel (this runs for every pixel of every support image).
function writeRow(out, at, step, line, w, { depth, color }, palette, transparency) {
  const packed = depth < 8;
  const perByte = 8 / depth;
  const mask = (1 << depth) - 1;
  const bits = (x) => (line[Math.floor(x / perByte)] >> (8 - depth * (1 + (x % perByte)))) & mask;
  const wide = depth === 16 ? 2 : 1;
  if (color === 3) {
    for (let x = 0; x < w; x++, at += step) {
      const i = packed ? bits(x) : line[x];
      out[at] = palette[3 * i] ?? 0;
      out[at + 1] = palette[3 * i + 1] ?? 0;
      out[at + 2] = palette[3 * i + 2] ?? 0;
      out[at + 3] = transparency && i < transparency.length ? transparency[i] : 255;
    }
  } else if (color === 0) {
    const scale = 255 / mask;
    for (let x = 0; x < w; x++, at += step) {
      const grey = packed ? bits(x) * scale : line[x * wide];
      out[at] = out[at + 1] = out[at + 2] = grey;
      out[at + 3] = 255;
    }
  } else {
    const channels = CHANNELS[color];
    for (let x = 0; x < w; x++, at += step) {
      const p = x * channels * wide;
      if (color === 4) {
        out[at] = out[at + 1] = out[at + 2] = line[p];
        out[at + 3] = line[p + wide];
      } else {
        out[at] = line[p];
        out[at + 1] = line[p + wide];
        out[at + 2] = line[p + 2 * wide];
        out[at + 3] = color === 6 ? line[p + 3 * wide] : 255;
      }
    }
  }
}
