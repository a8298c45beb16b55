// `npm run build` → dist/: the static page (index.html, app.js, sw.js and onnxruntime-web's wasm), which any web
// server can serve. Put a bundle beside it as dist/bundle.mtlb and it opens by itself.
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { build } from "esbuild";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
await build({ entryPoints: ["src/page.js"], bundle: true, format: "esm", target: "es2022", minify: true,
  outfile: "dist/app.js", logLevel: "warning", legalComments: "none", keepNames: true, external: ["./ort.wasm.min.mjs"] });
for (const file of ["index.html", "sw.js"]) copyFileSync(file, `dist/${file}`);
// onnxruntime-web as its authors ship it, beside app.js: the module, its wasm glue (which starts the worker threads
// from its own URL) and the wasm
for (const file of ["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"]) {
  copyFileSync(`node_modules/onnxruntime-web/dist/${file}`, `dist/${file}`);
}
console.log("built dist/");
