// Offline support: same-origin GETs go to the network first and fall back to the copy kept
// from the last visit, so the page, the wasm module and the weights work without a network.
const CACHE = "gdpo-sr-shell-v1";
const SHELL = ["./", "index.html", "style.css", "app.js", "gdpo-sr.js", "gdpo-sr-worker.js",
  "web.js", "web_bg.wasm", "weights/default.safetensors"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((c) => c.put(event.request, copy));
        }
        return response;
      })
      .catch(() => caches.match(event.request, { ignoreSearch: true })
        .then((hit) => hit ?? Response.error())),
  );
});
