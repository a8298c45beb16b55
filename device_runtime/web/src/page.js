// The demo page: open a bundle, name a few classes and give each a few images (files, drops or the camera), adapt
// on the page, then classify. Everything runs here, offline once loaded (sw.js caches the page); the bundle and the
// adapted classes stay in IndexedDB across reloads. `window.mtl` is the same as an API (the tests drive it).
import * as ort from "./ort.wasm.min.mjs"; // onnxruntime-web, served beside the page (build.mjs)
import { Adapter, Bundle } from "./index.js";
import { decodeImage } from "./decode.js";
import { defaultReject } from "./open_set.js";
import * as store from "./store.js";

const here = new URL("./", location.href).href;
ort.env.wasm.wasmPaths = here;
const params = new URLSearchParams(location.search);
const threads = Number(params.get("threads")) || (self.crossOriginIsolated ? navigator.hardwareConcurrency || 1 : 1);
ort.env.wasm.numThreads = threads;

const $ = (id) => document.getElementById(id);
let bundle = null;
let adapter = null;
let key = null; // a pinned signing key: bundle.pub beside the page (or ?key=PATH on this origin) → only signed bundles
let keyError = null; // the pinned key could not be read: no bundle is opened (never "no key, so anything goes")

// The pinned key: the one served beside the page, else the one pinned on an earlier visit. Once pinned, a key is
// never dropped by a failed or missing fetch (a server error, a captive portal, offline): only a new key replaces it.
async function pinnedKey() {
  const path = params.get("key") || "bundle.pub";
  const url = new URL(path, location.href);
  if (url.origin !== location.origin) throw new Error(`the key ${path} must come from this page's own server`);
  let served = null;
  try {
    const response = await fetch(url, { cache: "no-store" });
    if (response.ok) served = { pem: await response.text(), name: path };
  } catch { /* offline: the pinned key below */ }
  if (served) {
    await store.save("key", served);
    return served;
  }
  return (await store.load("key")) ?? null;
}

function status(text, fraction = null) {
  $("status").textContent = text;
  const bar = $("progress");
  bar.hidden = fraction === null;
  if (fraction !== null) bar.value = fraction;
}

async function openBundle(bytes, label) {
  if (keyError) throw new Error(`no bundle is opened: the pinned key could not be read (${keyError})`);
  status(`verifying ${label}…`, 0);
  const loaded = await Bundle.load(bytes, { ort, label, threads: 1, key });
  bundle = loaded;
  adapter = new Adapter(bundle);
  const m = bundle.manifest;
  $("reject").checked = defaultReject(m.openSet) === "auto";
  const algorithm = typeof m.producer.algorithm === "string" ? m.producer.algorithm : "?";
  $("bundle-info").textContent = `${label}: ${algorithm}, ${m.input.size}×${m.input.size}×${m.input.channels}, ` +
    `${m.featureDim}-d features, ${m.headType} head, ${m.steps} steps of lr ${m.lr}` +
    (key ? `; signature verified with ${key.name}` : "");
  status("bundle verified: name your classes and give each a few images");
  return bundle;
}

async function setBundle(bytes, label) {
  await openBundle(bytes, label);
  render();
  await saved(() => store.replace({ bundle: { bytes, label } }, ["state"])); // one transaction
}

// A write to IndexedDB that may fail (storage blocked, private mode, quota): the page goes on, and says so.
async function saved(write) {
  try {
    await write();
  } catch (error) {
    $("learned").textContent = `(not kept for the next visit: this browser's storage refused it — ${error?.message ?? error})`;
  }
}

async function restore() {
  const saved = await store.load("bundle");
  if (!saved) return false;
  await openBundle(saved.bytes, saved.label);
  const state = await store.load("state");
  if (state) {
    adapter = Adapter.fromState(bundle, state);
    status(`restored ${adapter.result.classes.length} adapted classes: classify an image`);
  }
  render();
  return true;
}

// Adapt a new learner on these classes; the page's current classes (and the saved state) stay as they are until it
// has succeeded, so a failed adaptation loses nothing.
async function adaptOn(classes, options = {}) {
  const learner = new Adapter(bundle);
  const names = Object.keys(classes);
  let done = 0;
  const total = names.reduce((a, n) => a + classes[n].length, 0);
  for (const name of names) {
    const pixels = [];
    for (const blob of classes[name]) pixels.push(await decodeImage(blob));
    await learner.addExamples(name, pixels);
    done += pixels.length;
    status(`embedding support images ${done}/${total}`, done / total / 2);
  }
  const result = await learner.adapt({ ...options, onProgress: ({ stage, step, of, loss }) =>
    status(`${stage} step ${step}/${of}, loss ${loss.toFixed(4)}`, 0.5 + (of ? step / of : 1) / 2) });
  adapter = learner;
  await saved(() => store.save("state", learner.toState()));
  status(`adapted to ${names.length} classes: support loss ${result.losses[0]?.toFixed(4) ?? result.finalLoss.toFixed(4)} → ` +
    `${result.finalLoss.toFixed(4)} in ${result.steps} steps`);
  render();
  return result;
}

async function classify(blobs, reject = null) {
  const pixels = [];
  for (const blob of blobs) pixels.push(await decodeImage(blob));
  return adapter.predict(pixels, { reject });
}

// ---- the page
function classRow(name = "") {
  const row = document.createElement("div");
  row.className = "class";
  row.innerHTML = `<input class="name" placeholder="class name" value="${name}">
    <label class="drop">drop images or <input type="file" accept="image/*" multiple></label>
    <span class="count">0 images</span> <button class="remove" title="remove this class">×</button>`;
  row.files = [];
  const add = (files) => {
    row.files.push(...[...files].filter((f) => f.type.startsWith("image/")));
    row.querySelector(".count").textContent = `${row.files.length} images`;
  };
  row.querySelector("input[type=file]").onchange = (e) => add(e.target.files);
  row.ondragover = (e) => e.preventDefault();
  row.ondrop = (e) => {
    e.preventDefault();
    add(e.dataTransfer.files);
  };
  row.querySelector(".remove").onclick = () => row.remove();
  $("classes").append(row);
}

function render() {
  $("adapt").disabled = !bundle;
  $("query-file").disabled = !adapter?.result;
  $("learned").textContent = adapter?.result
    ? `learned: ${adapter.result.classes.map((c) => `${c} (${adapter.examples[c]})`).join(", ")}` : "";
}

function bindPage() {
  $("bundle-file").onchange = async (e) => {
    const file = e.target.files[0];
    if (file) await guard(async () => setBundle(new Uint8Array(await file.arrayBuffer()), file.name));
  };
  $("add-class").onclick = () => classRow();
  $("adapt").onclick = () => guard(async () => {
    const classes = {};
    for (const row of document.querySelectorAll(".class")) {
      const name = row.querySelector(".name").value.trim();
      if (name && row.files.length) classes[name] = row.files;
    }
    await adaptOn(classes);
  });
  $("query-file").onchange = (e) => guard(async () => {
    const files = [...e.target.files];
    const { labels, probabilities, classes } = await classify(files, $("reject").checked ? "auto" : null);
    const list = $("results");
    list.replaceChildren();
    files.forEach((file, i) => {
      const item = document.createElement("li");
      const img = document.createElement("img");
      img.src = URL.createObjectURL(file);
      const p = Math.max(...probabilities[i]);
      item.append(img, ` ${labels[i]} — ${(100 * p).toFixed(1)} % (${classes.length} classes)`);
      list.append(item);
    });
    status(`classified ${files.length} image(s)`);
  });
  $("forget").onclick = () => guard(async () => {
    await saved(() => store.remove("state"));
    adapter = bundle ? new Adapter(bundle) : null;
    render();
    status("forgot the adapted classes");
  });
  classRow();
  classRow();
}

async function guard(work) {
  try {
    return await work();
  } catch (error) {
    status(`error: ${error.message}`);
    throw error;
  }
}

// ---- the API the tests and the benchmark drive (everything by URL, results as plain JSON)
const fetchBytes = async (url) => {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
};
const fetchBlob = async (url) => (await fetch(url)).blob();
const blobsOf = async (classes) => Object.fromEntries(await Promise.all(Object.entries(classes).map(
  async ([name, urls]) => [name, await Promise.all(urls.map(fetchBlob))])));
const plain = (predicted) => ({ ...predicted, weight: Array.from(adapter.head[0].data), bias: Array.from(adapter.head[1].data) });

window.mtl = {
  ort, threads,
  async load(url) {
    try {
      await setBundle(await fetchBytes(url), url.split("/").pop());
      return { ok: true };
    } catch (error) {
      return { error: `${error.name}: ${error.message}` };
    }
  },
  async adapt(classes, options = {}) {
    const result = await adaptOn(await blobsOf(classes), options);
    return result;
  },
  async predict(urls, reject = null) {
    return plain(await classify(await Promise.all(urls.map(fetchBlob)), reject));
  },
  // images given as their file bytes (a test that is offline cannot fetch them)
  async predictBytes(images) {
    return plain(await classify(images.map((bytes) => new Blob([Uint8Array.from(bytes)]))));
  },
  restore,
  // an image file → its decoded size, or the error a support or query image would give
  async decode(url, withPixels = false) {
    try {
      const pixels = await decodeImage(await fetchBlob(url), url.split("/").pop());
      return { width: pixels.width, height: pixels.height, ...(withPixels ? { rgba: Array.from(pixels.data) } : {}) };
    } catch (error) {
      return { error: `${error.name}: ${error.message}` };
    }
  },
  // Median seconds of `repeats` adaptations after a warm-up (first runs allocate onnxruntime's arenas): decode,
  // preprocess and embed the support set, initialise and adapt the head — what the Python side of
  // benchmarks/web_adapt.py times.
  async time(classes, repeats = 5) {
    const blobs = await blobsOf(classes);
    const seconds = [];
    for (let r = -1; r < repeats; r++) {
      const start = performance.now();
      const learner = new Adapter(bundle);
      for (const [name, list] of Object.entries(blobs)) {
        const pixels = [];
        for (const blob of list) pixels.push(await decodeImage(blob));
        await learner.addExamples(name, pixels);
      }
      await learner.adapt();
      if (r >= 0) seconds.push((performance.now() - start) / 1000);
    }
    seconds.sort((a, b) => a - b);
    const mid = seconds.length >> 1;
    const median = seconds.length % 2 ? seconds[mid] : (seconds[mid - 1] + seconds[mid]) / 2;
    return { median_s: median, runs: seconds, threads };
  },
};

async function start() {
  bindPage();
  render();
  if ("serviceWorker" in navigator && !params.has("nosw")) navigator.serviceWorker.register("sw.js").catch(() => {});
  try {
    key = await pinnedKey();
  } catch (error) {
    keyError = error?.message ?? String(error);
    status(`error: no bundle is opened: the pinned key could not be read (${keyError})`);
    return;
  }
  try {
    if (!(await restore()) && !params.has("nobundle")) {
      const response = await fetch("bundle.mtlb");
      if (response.ok) await setBundle(new Uint8Array(await response.arrayBuffer()), "bundle.mtlb");
      else status("open a bundle (.mtlb) to begin");
    }
  } catch (error) {
    status(`error: ${error.message}`);
  }
}
window.mtl.ready = start();
