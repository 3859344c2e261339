// GDPO-SR in the browser: one-step generative diffusion super-resolution on WebGPU (CPU
// fallback), running in a Web Worker. Images never leave the device.
//
//   import { Upscaler } from "gdpo-sr";
//   const upscaler = await Upscaler.load(); // the packaged model, or load(url | bytes)
//   const out = await upscaler.upscale(imageData, { scale: 4, onProgress, signal });
//   ctx.putImageData(new ImageData(out.data, out.width, out.height), 0, 0);

const WORKER_URL = new URL("./gdpo-sr-worker.js", import.meta.url);
// The shipped model, packaged beside this file by scripts/build-npm.sh (composed at build
// time from the project's trained UNet and the pretrained TAEF2 autoencoder, MIT).
export const DEFAULT_WEIGHTS_URL = new URL("./gdpo-sr.safetensors", import.meta.url);

function abortError() {
  return new DOMException("the upscale was cancelled", "AbortError");
}

function errorFrom(msg) {
  if (msg.name === "AbortError") return abortError();
  const e = new Error(msg.message);
  e.name = msg.name || "Error";
  return e;
}

export class Upscaler {
  #worker;
  #info = null;
  #nextId = 1;
  #pending = new Map(); // id -> {resolve, reject, onProgress}

  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = (event) => this.#receive(event.data);
    worker.onerror = (event) => {
      const error = new Error(`the GDPO-SR worker failed: ${event.message || "could not start"}`);
      for (const job of this.#pending.values()) job.reject(error);
      this.#pending.clear();
    };
  }

  /**
   * Loads weights (bytes, or a same-origin URL whose last copy the Cache API keeps for
   * offline use; default: the packaged model, DEFAULT_WEIGHTS_URL) into a new worker.
   * options: { backend: "auto" | "webgpu" | "cpu", cache: string | false, workerUrl }.
   */
  static async load(weights = DEFAULT_WEIGHTS_URL, options = {}) {
    const worker = new Worker(options.workerUrl ?? WORKER_URL, { type: "module" });
    const upscaler = new Upscaler(worker);
    // A URL is resolved against the page, not against the worker script's location.
    const source = typeof weights === "string" || weights instanceof URL
      ? new URL(weights, globalThis.location?.href).href
      : weights;
    try {
      const loaded = await upscaler.#call({
        type: "load",
        weights: source,
        backend: options.backend ?? "auto",
        cache: options.cache === undefined ? "gdpo-sr-weights-v1" : options.cache,
      });
      upscaler.#info = { ...loaded.info, weightsFromCache: loaded.cached };
    } catch (e) {
      worker.terminate();
      throw e;
    }
    return upscaler;
  }

  /** The backend in use (and why, on a fallback), the adapter's limits and the model. */
  info() {
    return this.#info;
  }

  /**
   * Upscales RGBA pixels ({width, height, data}, e.g. an ImageData).
   * options: { scale, seed, detail, tAdd, tDiff, tileSize, colourFix, float32,
   *            onProgress({done, total}), signal }.
   */
  upscale(image, options = {}) {
    const { onProgress, signal, ...rest } = options;
    if (signal?.aborted) return Promise.reject(abortError());
    const plain = image ? { width: image.width, height: image.height, data: image.data } : image;
    const id = this.#nextId++;
    const done = this.#call({ type: "upscale", image: plain, options: rest }, id, onProgress);
    if (signal) {
      const cancel = () => this.#worker.postMessage({ type: "cancel", id });
      signal.addEventListener("abort", cancel, { once: true });
      done.finally(() => signal.removeEventListener("abort", cancel)).catch(() => {});
    }
    return done;
  }

  /** Stops the worker and frees the model. */
  terminate() {
    this.#worker.terminate();
    for (const job of this.#pending.values()) job.reject(new Error("the upscaler was terminated"));
    this.#pending.clear();
  }

  #call(message, id = this.#nextId++, onProgress) {
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, onProgress });
      this.#worker.postMessage({ ...message, id });
    });
  }

  #receive(msg) {
    const job = this.#pending.get(msg.id);
    if (!job) return;
    if (msg.type === "progress") {
      job.onProgress?.({ done: msg.done, total: msg.total });
      return;
    }
    this.#pending.delete(msg.id);
    if (msg.type === "error") job.reject(errorFrom(msg));
    else if (msg.type === "loaded") job.resolve(msg);
    else job.resolve(msg.result);
  }
}
