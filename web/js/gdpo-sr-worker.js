// GDPO-SR worker: runs the wasm module (web.js + web_bg.wasm) off the page's main thread, so
// the page never freezes. It speaks a small message protocol with gdpo-sr.js:
//   page -> worker: {type: "load", id, weights, backend, cache} | {type: "upscale", id, image,
//                   options} | {type: "cancel", id}
//   worker -> page: {type: "loaded", id, info, cached} | {type: "progress", id, done, total} |
//                   {type: "result", id, result} | {type: "error", id, name, message}
import init, { Upscaler } from "./web.js";

const ready = init();
let upscaler = null;
// A trap inside the wasm module (a bug, or the GPU failing) leaves it unusable: say so on every
// later call instead of failing in confusing ways.
let crashed = null;
const running = new Map(); // upscale id -> AbortController

const post = (message, transfer = []) => self.postMessage(message, transfer);

// Weight bytes from bytes or a same-origin URL. The network comes first (the browser's HTTP
// cache makes a repeat download a cheap revalidation), so new weights at the same URL are
// picked up; the Cache API keeps the last copy, which loads when the network is unavailable.
async function weightBytes(source, cacheName) {
  if (source instanceof ArrayBuffer) return { bytes: new Uint8Array(source), cached: false };
  if (ArrayBuffer.isView(source)) {
    return { bytes: new Uint8Array(source.buffer, source.byteOffset, source.byteLength), cached: false };
  }
  const url = new URL(String(source), self.location.href);
  const cache = cacheName && "caches" in self ? await caches.open(cacheName) : null;
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    const kept = cache ? await cache.match(url) : undefined;
    if (!kept) throw new Error(`cannot download the weights ${url}: ${e.message}`);
    return { bytes: new Uint8Array(await kept.arrayBuffer()), cached: true };
  }
  if (!response.ok) throw new Error(`cannot download the weights ${url}: HTTP ${response.status}`);
  if (cache) await cache.put(url, response.clone());
  return { bytes: new Uint8Array(await response.arrayBuffer()), cached: false };
}

self.onmessage = async (event) => {
  const msg = event.data;
  if (msg.type === "cancel") {
    running.get(msg.id)?.abort();
    return;
  }
  try {
    if (crashed) throw new Error(`the model crashed earlier (${crashed}); load it again`);
    await ready;
    if (msg.type === "load") {
      const { bytes, cached } = await weightBytes(msg.weights, msg.cache);
      const next = await Upscaler.load(bytes, { backend: msg.backend });
      upscaler?.free();
      upscaler = next;
      post({ type: "loaded", id: msg.id, info: upscaler.info(), cached });
    } else if (msg.type === "upscale") {
      if (!upscaler) throw new Error("no model loaded: call load() first");
      const controller = new AbortController();
      running.set(msg.id, controller);
      const result = await upscaler.upscale(msg.image, {
        ...msg.options,
        signal: controller.signal,
        onProgress: (p) => post({ type: "progress", id: msg.id, done: p.done, total: p.total }),
      });
      const transfer = [result.data.buffer];
      if (result.rgb) transfer.push(result.rgb.buffer);
      post({ type: "result", id: msg.id, result }, transfer);
    } else {
      throw new Error(`unknown message type ${msg.type}`);
    }
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) crashed = e.message;
    post({ type: "error", id: msg.id, name: e?.name ?? "Error", message: e?.message ?? String(e) });
  } finally {
    running.delete(msg.id);
  }
};
