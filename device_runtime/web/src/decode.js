// An image file (Blob) → its pixels as the Python runtime sees them after Pillow's decode: RGBA bytes, no colour
// management (colorSpaceConversion "none") and no premultiplied alpha, so an opaque PNG gives exactly Pillow's
// values. (A JPEG decoder may differ from Pillow's libjpeg by a level here and there; a semi-transparent pixel
// passes through a canvas, which stores premultiplied alpha.)
import { DataError } from "./errors.js";

// What one image may be, as in the Python runtime (device_runtime/preprocess.py): a file of at most 64 MiB and at
// most 64 million pixels, the size read from the file's header before anything is decoded where the format says it.
export const MAX_IMAGE_BYTES = 64 << 20;
export const MAX_IMAGE_PIXELS = 64_000_000;

// (width, height) from a PNG, GIF, BMP or JPEG header, or null for another format (then checked after decoding).
export function headerSize(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const at = (i, text) => [...text].every((c, k) => bytes[i + k] === c.charCodeAt(0));
  if (bytes.length >= 24 && at(1, "PNG")) return [view.getUint32(16), view.getUint32(20)];
  if (bytes.length >= 10 && at(0, "GIF")) return [view.getUint16(6, true), view.getUint16(8, true)];
  if (bytes.length >= 26 && at(0, "BM")) return [Math.abs(view.getInt32(18, true)), Math.abs(view.getInt32(22, true))];
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

export async function decodeImage(blob, name = blob.name || "image") {
  if (blob.size > MAX_IMAGE_BYTES) {
    throw new DataError(`cannot read image ${name}: ${blob.size.toLocaleString("en")} bytes is more than the ` +
      `${MAX_IMAGE_BYTES.toLocaleString("en")} an image may have`);
  }
  const tooBig = (w, h) => new DataError(`cannot read image ${name}: ${w}x${h} pixels is more than the ` +
    `${MAX_IMAGE_PIXELS.toLocaleString("en")} an image may have`);
  const size = headerSize(new Uint8Array(await blob.slice(0, 1 << 16).arrayBuffer()));
  if (size && size[0] * size[1] > MAX_IMAGE_PIXELS) throw tooBig(...size);
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (error) {
    throw new DataError(`cannot read image ${name}: ${error.message}`);
  }
  if (bitmap.width * bitmap.height > MAX_IMAGE_PIXELS) {
    bitmap.close();
    throw tooBig(bitmap.width, bitmap.height);
  }
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { colorSpace: "srgb", willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const { data } = context.getImageData(0, 0, bitmap.width, bitmap.height, { colorSpace: "srgb" });
  const pixels = { width: bitmap.width, height: bitmap.height, data: new Uint8Array(data.buffer), name };
  bitmap.close();
  return pixels;
}
