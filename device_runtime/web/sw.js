// Offline once loaded. Network first: online, the page always gets its newest files (a fix reaches every returning
// visitor) and refreshes the cache with them; offline, the cached copy serves. Bundles are not cached here: the page
// keeps its bundle and classes in IndexedDB. A new version of this file drops the caches of older ones.
const CACHE = "mtl-web-v2";
const FILES = ["./", "index.html", "app.js", "ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"];
self.addEventListener("install", (event) => event.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES))));
self.addEventListener("activate", (event) => event.waitUntil((async () => {
  for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
  await self.clients.claim();
})()));
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin || url.pathname.endsWith(".mtlb")) return;
  const cached = url.pathname.endsWith(".pub") ? null : url.pathname;
  event.respondWith(fetch(event.request).then((response) => {
    if (response.ok && cached) {
      const copy = response.clone();
      caches.open(CACHE).then((c) => c.put(event.request, copy));
    }
    return response;
  }).catch(() => caches.match(event.request, { ignoreSearch: true }).then((hit) => hit || Response.error())));
});
