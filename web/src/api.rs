//! The JavaScript API: `Upscaler.load(weights, options)`, `upscaler.upscale(image, options)`,
//! `upscaler.info()`. Arguments are checked here and every failure rejects the promise with
//! an `Error` that says what was wrong; the module stays usable afterwards.

use std::rc::Rc;

use js_sys::{Float32Array, Function, Object, Promise, Reflect, Uint8Array, Uint8ClampedArray};
use model::{
    ColourFix, HostImage, MAX_OUTPUT_PIXELS, MAX_SCALE, ModelError, NaosdOptions, TileOptions,
    resample::bicubic_upsample_plane_u8, tiling::check_output_size,
};
use serde::Serialize;
use wasm_bindgen::{JsCast, prelude::*};
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use web_sys::AbortSignal;

use crate::{
    engine::{BackendPreference, Engine, TileEvents, Upscaled},
    error::WebError,
};

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = r#"
/** Options of `Upscaler.load`. */
export interface LoadOptions {
  /** "auto" (default): WebGPU on a hardware adapter, else the CPU (`info().fallbackReason` says
   *  why); "webgpu": any WebGPU adapter (software ones included) or an error; "cpu". */
  backend?: "auto" | "webgpu" | "cpu";
}
/** RGBA pixels, e.g. an `ImageData`. */
export interface RgbaImage {
  width: number;
  height: number;
  data: Uint8ClampedArray | Uint8Array;
}
/** Options of `upscale`. */
export interface UpscaleOptions {
  /** Upscaling factor, 1..8 (default 4). */
  scale?: number;
  /** Seed of the injected noise (default 0): the same seed gives the same output. */
  seed?: number;
  /** Where between the weights' two ends to run, 0..1: 0 = most faithful to the input, 1 = most
   *  generated detail (default: the weights' own, `info().detailDefault`). Needs weights with a
   *  detail range, as the shipped default has; changes the output, not the speed. */
  detail?: number;
  /** Noise-addition timestep, 1..999 (default 250): the method's noise level (the shipped model
   *  barely changes with it; `detail` is its knob). */
  tAdd?: number;
  /** Denoising timestep (default 100). */
  tDiff?: number;
  /** Tile side in input pixels (default: from the adapter's limits); changes speed and memory, not the output. */
  tileSize?: number;
  /** "none" (default), "adain" or "wavelet". */
  colourFix?: "none" | "adain" | "wavelet";
  /** Also return the exact output as planar float RGB in [0, 1] (`rgb`). */
  float32?: boolean;
  /** Called after each step (an encode and a decode step per tile, one whole-image step). */
  onProgress?: (progress: { done: number; total: number }) => void;
  /** Cancels the upscale; the promise rejects with an `AbortError`. */
  signal?: AbortSignal;
}
/** The upscaled image. */
export interface UpscaleResult extends RgbaImage {
  data: Uint8ClampedArray;
  /** Planar RGB in [0, 1] (channel-major), when `float32` was asked for. */
  rgb?: Float32Array;
  /** Tiles of the full-resolution steps, and all steps (an encode and a decode step per tile, one whole-image step). */
  tiles: number;
  steps: number;
  backend: "webgpu" | "cpu";
}
/** What `info()` reports. */
export interface UpscalerInfo {
  backend: "webgpu" | "cpu";
  fallbackReason: string | null;
  adapter: { vendor: string; architecture: string; description: string; software: boolean; maxBufferSize: number;
             maxStorageBufferBindingSize: number; maxComputeWorkgroupStorageSize: number;
             maxComputeInvocationsPerWorkgroup: number } | null;
  maxBufferBytes: number;
  preset: string;
  parameters: number;
  /** The weights' default `detail` (0..1), or null when they hold one model (no detail range). */
  detailDefault: number | null;
  /** The model's cost per output megapixel (GFLOP, counted layer by layer), for time estimates. */
  gflopsPerOutputMegapixel: number;
  maxOutputPixels: number;
  maxScale: number;
}
"#;

/// A loaded model, ready to upscale.
#[wasm_bindgen]
pub struct Upscaler {
    engine: Rc<Engine>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InfoReport<'a> {
    #[serde(flatten)]
    engine: &'a crate::engine::EngineReport,
    preset: &'a str,
    parameters: usize,
    detail_default: Option<f32>,
    gflops_per_output_megapixel: f64,
    max_output_pixels: usize,
    max_scale: usize,
}

#[wasm_bindgen]
impl Upscaler {
    /// Verifies and loads a weight file (`Uint8Array`) onto WebGPU, or the CPU where WebGPU
    /// is missing (`info().fallbackReason` says why).
    pub async fn load(
        weights: Uint8Array,
        #[wasm_bindgen(unchecked_param_type = "LoadOptions | undefined")] options: JsValue,
    ) -> Result<Upscaler, JsValue> {
        let backend = match optional(&options, "backend")? {
            None => BackendPreference::Auto,
            Some(v) => BackendPreference::parse(
                &v.as_string()
                    .ok_or_else(|| bad("backend must be a string"))?,
            )?,
        };
        let engine = Engine::load(&weights.to_vec(), backend).await?;
        Ok(Upscaler {
            engine: Rc::new(engine),
        })
    }

    /// The backend in use, why (on a fallback), the adapter's limits and the model.
    #[wasm_bindgen(unchecked_return_type = "UpscalerInfo")]
    pub fn info(&self) -> Result<JsValue, JsValue> {
        let report = InfoReport {
            engine: self.engine.report(),
            preset: &self.engine.config().name,
            parameters: self.engine.parameters(),
            detail_default: self.engine.detail_default(),
            gflops_per_output_megapixel: self.engine.gflops_per_output_megapixel(),
            max_output_pixels: MAX_OUTPUT_PIXELS,
            max_scale: MAX_SCALE,
        };
        let json = serde_json::to_string(&report).map_err(|e| bad(&e.to_string()))?;
        js_sys::JSON::parse(&json)
    }

    /// Upscales RGBA pixels (an `ImageData` or `{width, height, data}`); resolves to an
    /// `UpscaleResult`. Colour goes through the model; a non-opaque alpha channel is
    /// upscaled separately (bicubic) and carried into the result.
    #[wasm_bindgen(unchecked_return_type = "Promise<UpscaleResult>")]
    pub fn upscale(
        &self,
        #[wasm_bindgen(unchecked_param_type = "RgbaImage")] image: JsValue,
        #[wasm_bindgen(unchecked_param_type = "UpscaleOptions | undefined")] options: JsValue,
    ) -> Promise {
        let engine = Rc::clone(&self.engine);
        future_to_promise(async move {
            let request = Request::parse(&engine, &image, &options)?;
            let mut events = JsEvents {
                on_progress: request.on_progress.clone(),
                signal: request.signal.clone(),
            };
            let (host, alpha) = rgba_to_host(&image, &request.naosd)?;
            let done = engine
                .upscale(
                    &host,
                    &request.naosd,
                    request.detail,
                    request.tiles,
                    &mut events,
                )
                .await?;
            // Transparency is carried through: the alpha plane is upscaled separately
            // (bicubic), the network only sees colour.
            let alpha = alpha.map(|a| {
                bicubic_upsample_plane_u8(&a, host.width, host.height, request.naosd.scale)
            });
            result_object(
                &done,
                alpha.as_deref(),
                request.float32,
                engine.report().backend,
            )
        })
    }
}

/// A checked `upscale` request.
struct Request {
    naosd: NaosdOptions,
    /// The point of the weights' detail range; `None`: their default.
    detail: Option<f32>,
    tiles: TileOptions,
    float32: bool,
    on_progress: Option<Function>,
    signal: Option<AbortSignal>,
}

impl Request {
    fn parse(engine: &Engine, image: &JsValue, options: &JsValue) -> Result<Self, JsValue> {
        if !image.is_object() {
            return Err(bad(
                "upscale needs an image: an ImageData or {width, height, data}",
            ));
        }
        let mut naosd = NaosdOptions::default();
        if let Some(scale) = integer(options, "scale", 1, MAX_SCALE as u64)? {
            naosd.scale = scale as usize;
        }
        if let Some(seed) = integer(options, "seed", 0, (1 << 53) - 1)? {
            naosd.seed = seed;
        }
        let detail = match optional(options, "detail")? {
            None => None,
            Some(v) => match v.as_f64() {
                // Weights without a range refuse it in `Engine::upscale`, before any work.
                Some(d) if (0.0..=1.0).contains(&d) => Some(d as f32),
                _ => return Err(bad("detail must be a number in 0..=1")),
            },
        };
        if let Some(t) = integer(options, "tAdd", 1, 999)? {
            naosd.t_add = t as usize;
        }
        if let Some(t) = integer(options, "tDiff", 1, 999)? {
            naosd.t_diff = t as usize;
        }
        if let Some(v) = optional(options, "colourFix")? {
            naosd.colour_fix = match v.as_string().as_deref() {
                Some("none") => ColourFix::None,
                Some("adain") => ColourFix::Adain,
                Some("wavelet") => ColourFix::Wavelet,
                _ => return Err(bad("colourFix must be \"none\", \"adain\" or \"wavelet\"")),
            };
        }
        let mut tiles = engine.default_tiles(naosd.scale);
        if let Some(t) = integer(options, "tileSize", 8, 1 << 14)? {
            tiles.tile = t as usize;
        }

        let float32 = optional(options, "float32")?.is_some_and(|v| v.is_truthy());
        let on_progress = match optional(options, "onProgress")? {
            None => None,
            Some(f) => Some(
                f.dyn_into::<Function>()
                    .map_err(|_| bad("onProgress must be a function"))?,
            ),
        };
        let signal = match optional(options, "signal")? {
            None => None,
            Some(s) => Some(
                s.dyn_into::<AbortSignal>()
                    .map_err(|_| bad("signal must be an AbortSignal"))?,
            ),
        };
        Ok(Self {
            naosd,
            detail,
            tiles,
            float32,
            on_progress,
            signal,
        })
    }
}

/// Progress to `onProgress`, cancellation from the `AbortSignal`, and a turn of the event loop
/// between steps so both can happen.
struct JsEvents {
    on_progress: Option<Function>,
    signal: Option<AbortSignal>,
}

impl JsEvents {
    fn aborted(&self) -> bool {
        self.signal.as_ref().is_some_and(AbortSignal::aborted)
    }
}

impl TileEvents for JsEvents {
    async fn before(&mut self, _: usize, _: usize) -> Result<(), WebError> {
        if self.aborted() {
            return Err(WebError::Cancelled);
        }
        yield_to_event_loop().await;
        if self.aborted() {
            return Err(WebError::Cancelled);
        }
        Ok(())
    }

    fn after(&mut self, done: usize, total: usize) {
        if let Some(f) = &self.on_progress {
            let event = Object::new();
            let _ = Reflect::set(&event, &"done".into(), &(done as f64).into());
            let _ = Reflect::set(&event, &"total".into(), &(total as f64).into());
            if let Err(e) = f.call1(&JsValue::NULL, &event) {
                web_sys::console::warn_2(&"onProgress threw:".into(), &e);
            }
        }
    }
}

/// Resolves on the next macrotask (`setTimeout(0)`, in windows and workers alike).
async fn yield_to_event_loop() {
    let global = js_sys::global();
    let Ok(set_timeout) =
        Reflect::get(&global, &"setTimeout".into()).and_then(|f| f.dyn_into::<Function>())
    else {
        return;
    };
    let promise = Promise::new(&mut |resolve, _| {
        let _ = set_timeout.call2(&global, &resolve, &0.into());
    });
    let _ = JsFuture::from(promise).await;
}

/// Reads `{width, height, data}` RGBA into the model's host image (RGB, [-1, 1]) and the alpha
/// plane when some pixel is not opaque; checks the size against the output limit before
/// allocating anything large.
fn rgba_to_host(
    image: &JsValue,
    options: &NaosdOptions,
) -> Result<(HostImage, Option<Vec<u8>>), JsValue> {
    let width = integer(image, "width", 0, u32::MAX as u64)?
        .ok_or_else(|| bad("the image has no width"))? as usize;
    let height = integer(image, "height", 0, u32::MAX as u64)?
        .ok_or_else(|| bad("the image has no height"))? as usize;
    // A bad size is the caller's argument error (TypeError), like the checks around it.
    check_output_size(width, height, options.scale).map_err(|e| match e {
        ModelError::InvalidInput(m) => bad(&m),
        other => WebError::from(other).into(),
    })?;
    let data = Reflect::get(image, &"data".into())?;
    let bytes = if let Some(a) = data.dyn_ref::<Uint8ClampedArray>() {
        a.to_vec()
    } else if let Some(a) = data.dyn_ref::<Uint8Array>() {
        a.to_vec()
    } else {
        return Err(bad(
            "image.data must be a Uint8ClampedArray or Uint8Array of RGBA pixels",
        ));
    };
    if bytes.len() != width * height * 4 {
        return Err(bad(&format!(
            "image.data holds {} bytes; a {width}x{height} RGBA image needs {}",
            bytes.len(),
            width * height * 4
        )));
    }
    let alpha: Vec<u8> = bytes.iter().skip(3).step_by(4).copied().collect();
    let alpha = alpha.iter().any(|&a| a != 255).then_some(alpha);
    let host =
        HostImage::from_interleaved_u8(&bytes, width, height, 4, 3).map_err(WebError::from)?;
    Ok((host, alpha))
}

fn result_object(
    done: &Upscaled,
    alpha: Option<&[u8]>,
    float32: bool,
    backend: &str,
) -> Result<JsValue, JsValue> {
    let out = &done.image;
    let result = Object::new();
    let rgba = out.to_rgba_u8(alpha);
    Reflect::set(&result, &"width".into(), &(out.width as f64).into())?;
    Reflect::set(&result, &"height".into(), &(out.height as f64).into())?;
    Reflect::set(&result, &"data".into(), &Uint8ClampedArray::from(&rgba[..]))?;
    if float32 {
        let unit = out.to_unit_range();
        Reflect::set(&result, &"rgb".into(), &Float32Array::from(&unit[..]))?;
    }
    Reflect::set(&result, &"tiles".into(), &(done.tiles as f64).into())?;
    Reflect::set(&result, &"steps".into(), &(done.steps as f64).into())?;
    Reflect::set(&result, &"backend".into(), &backend.into())?;
    Ok(result.into())
}

fn bad(message: &str) -> JsValue {
    WebError::BadInput(message.to_string()).into()
}

/// `options[key]` unless `options` or the value is undefined/null.
fn optional(options: &JsValue, key: &str) -> Result<Option<JsValue>, JsValue> {
    if options.is_undefined() || options.is_null() {
        return Ok(None);
    }
    if !options.is_object() {
        return Err(bad("options must be an object"));
    }
    let v = Reflect::get(options, &key.into())?;
    Ok((!v.is_undefined() && !v.is_null()).then_some(v))
}

/// An optional integer option within `min..=max`.
fn integer(options: &JsValue, key: &str, min: u64, max: u64) -> Result<Option<u64>, JsValue> {
    let Some(v) = optional(options, key)? else {
        return Ok(None);
    };
    match v.as_f64() {
        Some(n) if n.fract() == 0.0 && n >= min as f64 && n <= max as f64 => Ok(Some(n as u64)),
        _ => Err(bad(&format!(
            "{key} must be an integer in {min}..={max}, got {}",
            js_sys::JSON::stringify(&v)
                .ok()
                .map(String::from)
                .unwrap_or_else(|| "a non-number".into())
        ))),
    }
}
