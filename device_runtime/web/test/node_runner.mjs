// The Node layer of the web runtime's tests (onnxruntime-node, the same src/ the page runs): reads one job file
// written by tests/web (Python), runs every job and prints one JSON result per job. Jobs:
//   {"kind": "load", "bundle": PATH}                       → {"ok": true} or {"error": "BundleError: …"}
//   {"kind": "adapt", "bundle": PATH, "classes": {name: [RGBA_JOB…]}, "queries": [RGBA_JOB…], "steps"?, "lr"?}
//       RGBA_JOB = {"file": PATH of raw RGBA bytes, "width": W, "height": H}
//                                                          → head, losses, labels, probabilities
//   {"kind": "preprocess", "spec": INPUT_SPEC, "images": [RGBA_JOB…]} → the uint8 (C, H, W) inputs as lists
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { Adapter, Bundle } from "../src/index.js";
import { toUint8 } from "../src/preprocess.js";

const pixels = (job) => ({ width: job.width, height: job.height, data: new Uint8Array(readFileSync(job.file)), name: job.file });

async function run(job) {
  if (job.kind === "preprocess") return { images: job.images.map((image) => Array.from(toUint8(pixels(image), job.spec))) };
  const bundle = await Bundle.load(new Uint8Array(readFileSync(job.bundle)), { ort, label: job.bundle, backend: "cpu" });
  if (job.kind === "load") return { ok: true };
  const adapter = new Adapter(bundle);
  for (const [name, images] of Object.entries(job.classes)) await adapter.addExamples(name, images.map(pixels));
  const result = await adapter.adapt({ steps: job.steps, lr: job.lr });
  const predicted = await adapter.predict(job.queries.map(pixels));
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
