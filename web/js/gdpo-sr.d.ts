// Types of the worker-backed GDPO-SR client (gdpo-sr.js). The option and result shapes are
// generated from the Rust crate (web.d.ts).
import type { LoadOptions, RgbaImage, UpscaleOptions, UpscaleResult, UpscalerInfo } from "./web.js";

export type { LoadOptions, RgbaImage, UpscaleOptions, UpscaleResult, UpscalerInfo };

export interface ClientLoadOptions extends LoadOptions {
  /** Cache API bucket keeping the last copy of weights fetched by URL, loaded when the network is
   *  unavailable (default "gdpo-sr-weights-v1"); false: none. */
  cache?: string | false;
  /** Where the worker script is served from (default: next to gdpo-sr.js). */
  workerUrl?: string | URL;
}

/** The packaged model (`gdpo-sr.safetensors` beside the module). */
export declare const DEFAULT_WEIGHTS_URL: URL;

export declare class Upscaler {
  /** Loads weights (bytes, or a same-origin URL) into a new Web Worker. */
  /** `weights` defaults to the packaged model, `DEFAULT_WEIGHTS_URL`. */
  static load(weights?: Uint8Array | ArrayBuffer | string | URL, options?: ClientLoadOptions): Promise<Upscaler>;
  /** The backend in use (and why, on a fallback), the adapter's limits and the model. */
  /** `weightsFromCache`: the network was unavailable and the kept copy was loaded. */
  info(): UpscalerInfo & { weightsFromCache: boolean };
  /** Upscales RGBA pixels; rejects with an AbortError when `signal` aborts. */
  upscale(image: RgbaImage, options?: UpscaleOptions): Promise<UpscaleResult>;
  /** Stops the worker and frees the model. */
  terminate(): void;
}
