// The fast unit layer (`npm test`, no browser, no Python): the pieces with no onnxruntime in them. What the runtime
// does with bundles and images is held against the Python runtime by tests/web (the refusal corpus, Pillow's
// pixels, the adapted heads).
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";
import { zipSync } from "fflate";
import { crc32, ZipSource } from "../src/archive.js";
import { BundleError, repr } from "../src/errors.js";
import { JsonFloat, loads } from "../src/jsonio.js";
import { readNpy } from "../src/npy.js";
import { resize } from "../src/preprocess.js";
import { sha256Plain } from "../src/sha256.js";

const parse = (text) => loads(new TextEncoder().encode(text), "m.json", (m) => new BundleError(m));

test("JSON keeps integers apart from floats and bounds what a hostile file can hold", () => {
  assert.equal(parse('{"a": 28}').a, 28);
  assert.ok(parse('{"a": 28.0}').a instanceof JsonFloat);
  assert.equal(Number(parse("[1e-3]")[0]), 0.001);
  assert.throws(() => parse(`[${"9".repeat(20)}]`), /an integer of 20 digits/);
  assert.throws(() => parse("[1e999]"), /out of the float range/);
  assert.throws(() => parse("[NaN]"), /NaN is not a JSON number/);
  assert.throws(() => parse("[-Infinity]"), /-Infinity is not a JSON number/);
  assert.throws(() => parse("[".repeat(33) + "]".repeat(33)), /nested more than 32 levels/);
  assert.throws(() => parse('{"a": 1} x'), /not valid JSON/);
  assert.throws(() => loads(Uint8Array.of(0xff), "m.json", (m) => new BundleError(m)), /not UTF-8/);
  assert.equal(Object.getPrototypeOf(parse('{"__proto__": {"x": 1}}')), null); // no prototype to pollute
});

test("messages quote values as Python does", () => {
  assert.equal(repr("a'b"), "\"a'b\"");
  assert.equal(repr(["x", 1, new JsonFloat(2)]), "['x', 1, 2.0]");
  assert.equal(repr("e".repeat(100), 10), "'eeeeeeeee");
});

test("crc32 and the plain sha256 agree with Node's", () => {
  for (const n of [0, 1, 55, 56, 64, 1000, 70000]) {
    const bytes = new Uint8Array(randomBytes(n));
    assert.equal(sha256Plain(bytes), createHash("sha256").update(bytes).digest("hex"));
  }
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
});

test("a zip's members are read and checked against their CRC", () => {
  const zip = zipSync({ "a.txt": new TextEncoder().encode("hello"), "b/c.bin": Uint8Array.of(1, 2, 3) }, { level: 0 });
  const source = new ZipSource(zip, "t.zip");
  assert.deepEqual([...source.read("b/c.bin")], [1, 2, 3]);
  assert.throws(() => source.read("nope"), /missing file nope/);
  const broken = zip.slice();
  broken[Buffer.from(broken).indexOf("hello") + 1] ^= 1; // a byte of the stored "hello"
  assert.throws(() => new ZipSource(broken, "t.zip").read("a.txt"), /cannot read member a.txt/);
});

test("a .npy float array is read; an object array is refused", () => {
  const header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }";
  const padded = header.padEnd(118, " ") + "\n";
  const bytes = new Uint8Array(10 + padded.length + 12);
  bytes.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, padded.length, 0]);
  bytes.set(new TextEncoder().encode(padded), 10);
  bytes.set(new Uint8Array(Float32Array.of(1.5, -2, 3).buffer), 10 + padded.length);
  assert.deepEqual(readNpy(bytes), { dtype: "float32", shape: [1, 3], data: Float64Array.of(1.5, -2, 3) });
  const object = bytes.slice();
  object.set(new TextEncoder().encode("{'descr': '|O', "), 10);
  assert.throws(() => readNpy(object), /Object arrays cannot be loaded/);
});

test("resizing to the same size is the identity; a constant image stays constant", () => {
  const plane = Uint8Array.from({ length: 35 }, (_, i) => i * 7);
  assert.equal(resize(plane, 5, 7, 5, 7, "bicubic"), plane);
  for (const filter of ["bilinear", "bicubic", "lanczos", "box", "nearest"]) {
    assert.ok(resize(new Uint8Array(99 * 61).fill(200), 99, 61, 28, 28, filter).every((v) => v === 200), filter);
  }
});
