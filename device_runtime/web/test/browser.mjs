// The browser layer of the web runtime's tests and benchmark: serves dist/ (and a folder of test files under
// /files/) on localhost with the headers that allow wasm threads (cross-origin isolation), opens the page in a real
// headless Chromium (playwright-core, the system's /usr/bin/chromium or $CHROMIUM) and runs the jobs of a job file
// through `window.mtl`, printing one JSON result per job. Jobs:
//   {"kind": "load", "bundle": URL, "key"?: URL}                   → {"ok": true} or {"error": …} (with a pinned key)
//   {"kind": "parity", "bundle": URL, "classes": {name: [URL…]}, "queries": [URL…], "threads"?: T}
//        → the adapted head, labels and probabilities, then the same queries after a reload (IndexedDB) as "restored"
//   {"kind": "decode", "images": [URL…], "pixels"?: true}          → each image's decoded size (and RGBA) or its refusal
//   {"kind": "time", "bundle": URL, "classes": {…}, "threads": T, "repeats": R} → median seconds of an adaptation
//   {"kind": "ui", "bundle": PATH, "classes": {name: [PATH…]}, "queries": [PATH…]} → the demo page used as a person
//        would (file pickers, names, buttons): its status line, result lines, and what it shows after a reload
//   {"kind": "offline", "bundle": URL, "classes": {…}, "queries": [URL…]} → with the service worker: adapt, go
//        offline, reload: does the page still open, with its classes, and predict?
// Every result also says how many bytes the page transferred ("bytes").
import { createReadStream, readFileSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, normalize } from "node:path";
import { chromium } from "playwright-core";

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
  ".png": "image/png", ".jpg": "image/jpeg", ".mtlb": "application/zip", ".json": "application/json" };

export function serve(dist, files) {
  const server = createServer((request, response) => {
    const path = decodeURIComponent(new URL(request.url, "http://x").pathname);
    const [root, rest] = path.startsWith("/files/") ? [files, path.slice(7)] : [dist, path.slice(1) || "index.html"];
    const file = normalize(join(root, rest));
    let size;
    try {
      if (!file.startsWith(normalize(root))) throw new Error("outside");
      size = statSync(file).size;
    } catch {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "Content-Type": TYPES[extname(file)] || "application/octet-stream", "Content-Length": size,
      "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp", "Cache-Control": "no-store" });
    createReadStream(file).pipe(response);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

export async function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"] });
}

async function open(browser, base, query) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const bytes = { total: 0, page: 0 }; // everything, and the page's own files (not the bundle or images: /files/)
  page.on("response", async (response) => {
    try {
      const length = (await response.body()).length;
      bytes.total += length;
      if (!new URL(response.url()).pathname.startsWith("/files/")) bytes.page += length;
    } catch { /* a redirect has no body */ }
  });
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${base}/index.html?${query}`);
  await page.evaluate(() => window.mtl.ready);
  return { context, page, bytes, errors };
}

async function run(browser, base, job) {
  const threads = job.threads || 1;
  if (job.kind === "offline") return offline(browser, base, job);
  const pinned = job.key ? `&key=${encodeURIComponent(job.key)}` : "";
  const { context, page, bytes } = await open(browser, base, `nosw&nobundle&threads=${threads}${pinned}`);
  try {
    if (job.kind === "decode") {
      const images = await page.evaluate(([urls, pixels]) => Promise.all(urls.map((u) => window.mtl.decode(u, pixels))),
        [job.images, Boolean(job.pixels)]);
      return { images };
    }
    if (job.kind === "ui") return { ...(await clickThrough(page, job)), bytes };
    const loaded = await page.evaluate((url) => window.mtl.load(url), job.bundle);
    if (job.kind === "load" || loaded.error) return loaded;
    if (job.kind === "time") {
      const timed = await page.evaluate(([classes, repeats]) => window.mtl.time(classes, repeats), [job.classes, job.repeats || 5]);
      return { ...timed, bytes };
    }
    const result = await page.evaluate((classes) => window.mtl.adapt(classes), job.classes);
    const predicted = await page.evaluate((urls) => window.mtl.predict(urls), job.queries);
    await page.reload();
    await page.evaluate(() => window.mtl.ready);
    const restored = await page.evaluate((urls) => window.mtl.predict(urls), job.queries);
    const isolated = await page.evaluate(() => self.crossOriginIsolated);
    return { result, ...predicted, restored, crossOriginIsolated: isolated, bytes };
  } catch (error) {
    return { error: String(error.message || error).split("\n")[0] };
  } finally {
    await context.close();
  }
}

async function offline(browser, base, job) {
  const { context, page } = await open(browser, base, "nobundle");
  try {
    await page.evaluate(() => navigator.serviceWorker.ready);
    await page.reload(); // now under the service worker, which has cached the page's files
    await page.evaluate(() => window.mtl.ready);
    await page.evaluate((url) => window.mtl.load(url), job.bundle);
    await page.evaluate((classes) => window.mtl.adapt(classes), job.classes);
    const queries = await page.evaluate((urls) => Promise.all(urls.map(async (u) => {
      const blob = await (await fetch(u)).blob();
      return [...new Uint8Array(await blob.arrayBuffer())];
    })), job.queries);
    const controlled = await page.evaluate(() => navigator.serviceWorker.controller !== null);
    await context.setOffline(true);
    await page.reload();
    await page.evaluate(() => window.mtl.ready);
    const status = await page.textContent("#status");
    const predicted = await page.evaluate((images) => window.mtl.predictBytes(images), queries);
    return { controlled, status, ...predicted };
  } catch (error) {
    return { error: String(error.message || error).split("\n")[0] };
  } finally {
    await context.close();
  }
}

async function clickThrough(page, job) {
  const status = () => page.textContent("#status");
  await page.setInputFiles("#bundle-file", job.bundle);
  await page.waitForFunction(() => /bundle verified|error/.test(document.querySelector("#status").textContent));
  const names = Object.keys(job.classes);
  while ((await page.locator(".class").count()) < names.length) await page.click("#add-class");
  for (const [i, name] of names.entries()) {
    const row = page.locator(".class").nth(i);
    await row.locator(".name").fill(name);
    await row.locator("input[type=file]").setInputFiles(job.classes[name]);
  }
  await page.click("#adapt");
  await page.waitForFunction(() => /adapted to|error/.test(document.querySelector("#status").textContent));
  const adapted = await status();
  await page.setInputFiles("#query-file", job.queries);
  await page.waitForFunction((n) => document.querySelectorAll("#results li").length === n || /error/.test(
    document.querySelector("#status").textContent), job.queries.length);
  const results = await page.locator("#results li").allTextContents();
  await page.reload();
  await page.evaluate(() => window.mtl.ready);
  return { adapted, results, afterReload: { status: await status(), learned: await page.textContent("#learned") } };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
  const server = await serve(spec.dist, spec.files);
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await launch();
  const out = [];
  try {
    for (const job of spec.jobs) out.push(await run(browser, base, job));
  } finally {
    await browser.close();
    server.close();
  }
  process.stdout.write(JSON.stringify(out));
}
