// Offline once loaded: the page's files are cached on first visit and served from the cache after (network first
// for the bundle, so a new bundle.mtlb beside the page is picked up when the network is there).
const CACHE = "mtl-web-v1";
const FILES = ["./", "index.html", "app.js", "ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"];
self.addEventListener("install", (event) => event.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES))));
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin) return;
  if (url.pathname.endsWith(".mtlb")) {
    event.respondWith(fetch(event.request).then((response) => {
      if (response.ok) caches.open(CACHE).then((c) => c.put(event.request, response.clone()));
      return response;
    }).catch(() => caches.match(event.request).then((hit) => hit || Response.error())));
    return;
  }
  event.respondWith(caches.match(event.request, { ignoreSearch: true }).then((hit) => hit || fetch(event.request)));
});
