// Image headers give an image's size before the browser decodes it (a decompression bomb is refused unread).
import assert from "node:assert/strict";
import { test } from "node:test";
import { headerSize } from "../src/decode.js";

test("PNG, GIF, BMP and JPEG headers give (width, height); anything else gives null", () => {
  const png = new Uint8Array(24);
  png.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  new DataView(png.buffer).setUint32(16, 100000);
  new DataView(png.buffer).setUint32(20, 70000);
  assert.deepEqual(headerSize(png), [100000, 70000]);
  const gif = Uint8Array.from([0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x10, 0x00, 0x20, 0x00]);
  assert.deepEqual(headerSize(gif), [16, 32]);
  // JPEG: SOI, an APP0 segment of 16 bytes, then SOF0 with height 480 and width 640
  const jpeg = Uint8Array.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, ...new Array(14).fill(0),
    0xff, 0xc0, 0x00, 0x11, 0x08, 0x01, 0xe0, 0x02, 0x80, 0x03]);
  assert.deepEqual(headerSize(jpeg), [640, 480]);
  assert.equal(headerSize(Uint8Array.from([1, 2, 3, 4])), null);
});
