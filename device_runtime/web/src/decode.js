// An image file (Blob) → its pixels as the Python runtime sees them after Pillow's decode: RGBA bytes, no colour
// management (colorSpaceConversion "none") and no premultiplied alpha, so an opaque PNG gives exactly Pillow's
// values. (A JPEG decoder may differ from Pillow's libjpeg by a level here and there; a semi-transparent pixel
// passes through a canvas, which stores premultiplied alpha.)
import { DataError } from "./errors.js";
import { decodePng, isPng } from "./png.js";

// What one image may be, as in the Python runtime (device_runtime/preprocess.py): a file of at most 64 MiB and at
// most 64 million pixels, the size read from the file's header before anything is decoded where the format says it.
export const MAX_IMAGE_BYTES = 64 << 20;
export const MAX_IMAGE_PIXELS = 64_000_000;

// (width, height) from a PNG, GIF, BMP, WebP or JPEG header (the JPEG's segments walked to its frame header, however
// far into the file), or null for another format: the page does not decode what it cannot size first.
export function headerSize(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const at = (i, text) => [...text].every((c, k) => bytes[i + k] === c.charCodeAt(0));
  if (bytes.length >= 24 && at(1, "PNG")) return [view.getUint32(16), view.getUint32(20)];
  if (bytes.length >= 10 && at(0, "GIF")) return [view.getUint16(6, true), view.getUint16(8, true)];
  if (bytes.length >= 26 && at(0, "BM")) return [Math.abs(view.getInt32(18, true)), Math.abs(view.getInt32(22, true))];
  if (bytes.length >= 30 && at(0, "RIFF") && at(8, "WEBP")) {
    const chunk = String.fromCharCode(...bytes.subarray(12, 16));
    if (chunk === "VP8 ") return [view.getUint16(26, true) & 0x3fff, view.getUint16(28, true) & 0x3fff];
    if (chunk === "VP8L") {
      const bits = view.getUint32(21, true);
      return [(bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1];
    }
    if (chunk === "VP8X") {
      const three = (i) => bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16);
      return [three(24) + 1, three(27) + 1];
    }
    return null;
  }
  if (bytes.length >= 4 && bytes[0] === 0xff && bytes[1] === 0xd8) {
    for (let i = 2; i + 9 < bytes.length;) {
      if (bytes[i] !== 0xff) return null;
      const marker = bytes[i + 1];
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
        return [view.getUint16(i + 7), view.getUint16(i + 5)];
      }
      i += 2 + view.getUint16(i + 2);
    }
  }
  return null;
}

// A JPEG's bytes with its EXIF orientation set to 1 ("as stored"): browsers rotate a photo by that tag whatever
// createImageBitmap is told, and Pillow, the reference, never does.
export function withoutOrientation(bytes) {
  if (!(bytes[0] === 0xff && bytes[1] === 0xd8)) return bytes;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 2; i + 4 <= bytes.length && bytes[i] === 0xff;) {
    const marker = bytes[i + 1];
    const length = view.getUint16(i + 2);
    if (marker === 0xda) break; // the image data starts: no more metadata segments
    const tiff = i + 10;
    if (marker === 0xe1 && length >= 16 && String.fromCharCode(...bytes.subarray(i + 4, i + 10)) === "Exif\0\0") {
      const little = bytes[tiff] === 0x49;
      const ifd = tiff + view.getUint32(tiff + 4, little);
      if (ifd + 2 > i + 2 + length) return bytes;
      const count = view.getUint16(ifd, little);
      for (let k = 0; k < count; k++) {
        const entry = ifd + 2 + 12 * k;
        if (entry + 12 > i + 2 + length) break;
        if (view.getUint16(entry, little) === 0x0112) {
          const copy = bytes.slice();
          new DataView(copy.buffer).setUint16(entry + 8, 1, little);
          return copy;
        }
      }
    }
    i += 2 + length;
  }
  return bytes;
}

export async function decodeImage(blob, name = blob.name || "image") {
  if (blob.size > MAX_IMAGE_BYTES) {
    throw new DataError(`cannot read image ${name}: ${blob.size.toLocaleString("en")} bytes is more than the ` +
      `${MAX_IMAGE_BYTES.toLocaleString("en")} an image may have`);
  }
  const tooBig = (w, h) => new DataError(`cannot read image ${name}: ${w}x${h} pixels is more than the ` +
    `${MAX_IMAGE_PIXELS.toLocaleString("en")} an image may have`);
  const bytes = new Uint8Array(await blob.arrayBuffer());
  if (isPng(bytes)) return decodePng(bytes, name, MAX_IMAGE_PIXELS); // Pillow's pixels exactly, transparency included
  const size = headerSize(bytes);
  if (!size) {
    throw new DataError(`cannot read image ${name}: its size cannot be read before decoding it (PNG, JPEG, GIF, BMP ` +
      "and WebP can)");
  }
  if (size[0] * size[1] > MAX_IMAGE_PIXELS) throw tooBig(...size);
  let bitmap;
  try {
    // no colour management and no EXIF rotation (the tag is neutralised): Pillow applies neither
    bitmap = await createImageBitmap(new Blob([withoutOrientation(bytes)]),
      { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (error) {
    throw new DataError(`cannot read image ${name}: ${error.message}`);
  }
  if (bitmap.width * bitmap.height > MAX_IMAGE_PIXELS) {
    bitmap.close();
    throw tooBig(bitmap.width, bitmap.height);
  }
  const canvas = typeof OffscreenCanvas === "function" ? new OffscreenCanvas(bitmap.width, bitmap.height)
    : Object.assign(document.createElement("canvas"), { width: bitmap.width, height: bitmap.height });
  const context = canvas.getContext("2d", { colorSpace: "srgb", willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const { data } = context.getImageData(0, 0, bitmap.width, bitmap.height, { colorSpace: "srgb" });
  const pixels = { width: bitmap.width, height: bitmap.height, data: new Uint8Array(data.buffer), name };
  bitmap.close();
  return pixels;
}
