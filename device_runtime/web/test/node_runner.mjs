// The Node layer of the web runtime's tests (onnxruntime-node, the same src/ the page runs): reads one job file
// written by tests/web (Python), runs every job and prints one JSON result per job. Jobs:
//   {"kind": "load", "bundle": PATH, "key"?: PEM_PATH}     → {"ok": true} or {"error": "BundleError: …"}
//   {"kind": "adapt", "bundle": PATH, "classes": {name: [RGBA_JOB…]}, "queries": [RGBA_JOB…], "steps"?, "lr"?}
//       "reject"?: "auto" | P;  RGBA_JOB = {"file": PATH of raw RGBA bytes, "width": W, "height": H}
//                                                          → head, losses, labels, probabilities
//   {"kind": "preprocess", "spec": INPUT_SPEC, "images": [RGBA_JOB…]} → the uint8 (C, H, W) inputs as lists
//   {"kind": "png", "spec": INPUT_SPEC, "files": [PATH…]}  → each PNG decoded by src/png.js and preprocessed
//   {"kind": "schema", "io": [[channels, size, dim, state, context|null]…]} → the runtime's copy of the bundle
//        schema (names, limits, the graph interfaces for each argument list), held to device_runtime/schema.py
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { Adapter, Bundle } from "../src/index.js";
import * as archive from "../src/archive.js";
import * as schema from "../src/manifest.js";
import * as openSet from "../src/open_set.js";
import { decodePng } from "../src/png.js";
import { toUint8 } from "../src/preprocess.js";

const pixels = (job) => ({ width: job.width, height: job.height, data: new Uint8Array(readFileSync(job.file)), name: job.file });

async function run(job) {
  if (job.kind === "schema") {
    const names = ["SCHEMA", "MANIFEST", "SIGNATURE", "HEAD_TYPES", "HEAD_INITS", "UPDATE_RULES", "DTYPES", "GRAPH_NAMES",
      "CONTEXT_GRAPHS", "RESIZE_METHODS", "LIMITS", "MAX_FILES", "MAX_NAME", "BACKGROUND", "MAX_BACKGROUND"];
    const limits = ["MAX_MANIFEST_BYTES", "MAX_MEMBERS", "MAX_DIRECTORY_BYTES", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES",
      "MAX_RATIO", "RATIO_FLOOR"];
    return { ...Object.fromEntries(names.map((n) => [n, schema[n]])), STANDARD_DOMAINS: [...schema.STANDARD_DOMAINS].sort(),
      BACKGROUND_TOP: openSet.BACKGROUND_TOP,
      archive: Object.fromEntries(limits.map((n) => [n, archive[n]])), io: job.io.map((args) => schema.graphIO(...args)) };
  }
  if (job.kind === "png") {
    return { images: job.files.map((file) => {
      try {
        return Array.from(toUint8(decodePng(new Uint8Array(readFileSync(file)), file, 64_000_000), job.spec));
      } catch (error) {
        return `${error.name}: ${error.message}`;
      }
    }) };
  }
  if (job.kind === "preprocess") return { images: job.images.map((image) => Array.from(toUint8(pixels(image), job.spec))) };
  const key = job.key ? { pem: readFileSync(job.key, "utf8"), name: job.key } : null;
  const bundle = await Bundle.load(new Uint8Array(readFileSync(job.bundle)), { ort, label: job.bundle, backend: "cpu", key });
  if (job.kind === "load") return { ok: true };
  const adapter = new Adapter(bundle);
  for (const [name, images] of Object.entries(job.classes)) await adapter.addExamples(name, images.map(pixels));
  const result = await adapter.adapt({ steps: job.steps, lr: job.lr });
  const predicted = await adapter.predict(job.queries.map(pixels), { reject: job.reject ?? null });
  const [weight, bias] = adapter.head;
  return { result, weight: Array.from(weight.data), bias: Array.from(bias.data), ...predicted };
}

const jobs = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = [];
for (const job of jobs) {
  try {
    out.push(await run(job));
  } catch (error) {
    out.push({ error: `${error.name}: ${error.message}` });
  }
}
process.stdout.write(JSON.stringify(out));
