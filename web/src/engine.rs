//! The browser-side engine: a model on WebGPU (burn-wgpu) or, where WebGPU is missing, on
//! the CPU (burn-flex compiled to wasm), and the asynchronous tile loop both run.
//!
//! The loop is the model crate's [`TiledUpscale`] plan driven with `await`s: results are read
//! back with `into_data_async` (a WebGPU buffer can only be mapped asynchronously), and
//! between tiles control returns to the event loop so that progress messages go out and a
//! cancellation can arrive.

use burn::{
    backend::{Flex, Wgpu},
    module::Module,
    tensor::backend::Backend,
};
use model::{
    DetailRange, HostImage, Naosd, NaosdOptions, TileOptions, TiledUpscale,
    tiling::{global_step_bytes, local_step_bytes},
};
use serde::Serialize;

use crate::error::WebError;

/// Which backend a caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendPreference {
    /// WebGPU when the browser offers a hardware adapter, otherwise the CPU (reported in
    /// `info`): a software WebGPU adapter runs this model several times slower than the
    /// wasm CPU backend (docs/web.md).
    Auto,
    /// WebGPU or an error.
    WebGpu,
    /// The CPU backend, even where WebGPU exists.
    Cpu,
}

impl BackendPreference {
    /// Parses `"auto" | "webgpu" | "cpu"`.
    ///
    /// # Errors
    /// [`WebError::BadInput`] for anything else.
    pub fn parse(name: &str) -> Result<Self, WebError> {
        match name {
            "auto" => Ok(Self::Auto),
            "webgpu" => Ok(Self::WebGpu),
            "cpu" => Ok(Self::Cpu),
            other => Err(WebError::BadInput(format!(
                "backend must be \"auto\", \"webgpu\" or \"cpu\", got {other:?}"
            ))),
        }
    }
}

/// The WebGPU adapter as the browser describes it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterReport {
    pub vendor: String,
    pub architecture: String,
    pub description: String,
    /// A software rasteriser (SwiftShader, llvmpipe/lavapipe, or `isFallbackAdapter`).
    pub software: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u64,
    pub max_compute_invocations_per_workgroup: u64,
}

/// What `info()` reports: the backend actually in use, and why.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineReport {
    /// `"webgpu"` or `"cpu"`.
    pub backend: &'static str,
    /// Why the CPU runs when it does (e.g. "navigator.gpu is missing"); `None` on WebGPU or
    /// when the CPU was asked for.
    pub fallback_reason: Option<String>,
    pub adapter: Option<AdapterReport>,
    /// Bytes the largest single buffer may hold; tiles are sized from it.
    pub max_buffer_bytes: u64,
}

/// CPU fallback: tiles sized to keep the wasm heap small.
const CPU_BUFFER_BUDGET: u64 = 256 << 20;

/// A loaded model on the backend in use, and the weight file's detail range (if any).
pub struct Engine {
    loaded: Loaded,
    range: Option<DetailRange>,
}

/// The model (at the weight file's default detail) on the backend in use.
// One engine per page, moved only when it is created: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
enum Loaded {
    WebGpu {
        model: Naosd<Wgpu>,
        device: burn::backend::wgpu::WgpuDevice,
        report: EngineReport,
    },
    Cpu {
        model: Naosd<Flex>,
        report: EngineReport,
    },
}

impl Engine {
    /// Loads `weights` onto the backend `preference` selects.
    ///
    /// # Errors
    /// [`WebError::Model`] for a bad weight file; [`WebError::Backend`] when WebGPU was
    /// required and is missing.
    pub async fn load(weights: &[u8], preference: BackendPreference) -> Result<Self, WebError> {
        // Verify the file (format, version, hash, config) before touching any device.
        model::read_weight_info(weights)?;
        let fallback_reason = match preference {
            BackendPreference::Cpu => None,
            BackendPreference::Auto | BackendPreference::WebGpu => {
                match gpu::init_webgpu(preference == BackendPreference::Auto).await {
                    Ok((device, adapter)) => {
                        let (model, range) =
                            model::load_weights_with_range::<Wgpu>(weights, &device)?;
                        let max_buffer_bytes = adapter
                            .max_storage_buffer_binding_size
                            .min(adapter.max_buffer_size);
                        return Ok(Self {
                            loaded: Loaded::WebGpu {
                                model,
                                device,
                                report: EngineReport {
                                    backend: "webgpu",
                                    fallback_reason: None,
                                    adapter: Some(adapter),
                                    max_buffer_bytes,
                                },
                            },
                            range,
                        });
                    }
                    Err(reason) if preference == BackendPreference::Auto => Some(reason),
                    Err(reason) => {
                        return Err(WebError::Backend {
                            backend: "webgpu",
                            message: reason,
                        });
                    }
                }
            }
        };
        Ok(Self::cpu(weights, fallback_reason)?)
    }

    /// Loads `weights` on the CPU backend.
    fn cpu(weights: &[u8], fallback_reason: Option<String>) -> Result<Self, model::ModelError> {
        let (model, range) = model::load_weights_with_range::<Flex>(weights, &Default::default())?;
        Ok(Self {
            loaded: Loaded::Cpu {
                model,
                report: EngineReport {
                    backend: "cpu",
                    fallback_reason,
                    adapter: None,
                    max_buffer_bytes: CPU_BUFFER_BUDGET,
                },
            },
            range,
        })
    }

    pub fn report(&self) -> &EngineReport {
        match &self.loaded {
            Loaded::WebGpu { report, .. } | Loaded::Cpu { report, .. } => report,
        }
    }

    pub fn config(&self) -> &model::ModelConfig {
        match &self.loaded {
            Loaded::WebGpu { model, .. } => model.config(),
            Loaded::Cpu { model, .. } => model.config(),
        }
    }

    /// Parameters of the loaded model (one point of a detail range).
    pub fn parameters(&self) -> usize {
        match &self.loaded {
            Loaded::WebGpu { model, .. } => model.num_params(),
            Loaded::Cpu { model, .. } => model.num_params(),
        }
    }

    /// The weight file's default point of its detail range; `None` for a file with one model.
    pub fn detail_default(&self) -> Option<f32> {
        self.range.as_ref().map(DetailRange::default_detail)
    }

    /// The model at `detail` of the range (`None`: the file's default, as loaded). A point is
    /// blended on the host and uploaded per job: one multiply-add per UNet parameter against
    /// the ~1 TFLOP per output megapixel of an upscale, and no second model kept on the device.
    fn model_at<B: Backend>(
        &self,
        model: &Naosd<B>,
        detail: Option<f32>,
    ) -> Result<Naosd<B>, WebError> {
        match (detail, &self.range) {
            (None, _) => Ok(model.clone()),
            (Some(d), Some(range)) => Ok(range.apply(model.clone(), d)?),
            (Some(_), None) => Err(WebError::BadInput(
                "these weights hold one model, not a detail range: `detail` needs a weight file \
                 made by `trainer-native range` (the shipped default is one)"
                    .into(),
            )),
        }
    }

    /// GFLOPs of the model per output megapixel (`Naosd::gflops_per_output_megapixel`, as
    /// `trainer-native info` counts them): what a time estimate scales with.
    pub fn gflops_per_output_megapixel(&self) -> f64 {
        let parts = match &self.loaded {
            Loaded::WebGpu { model, .. } => model.gflops_per_output_megapixel(),
            Loaded::Cpu { model, .. } => model.gflops_per_output_megapixel(),
        };
        parts.iter().sum()
    }

    /// The tiles used when the caller does not choose: sized from the backend's buffer limit.
    pub fn default_tiles(&self, scale: usize) -> TileOptions {
        TileOptions::for_device(self.config(), scale, self.report().max_buffer_bytes)
    }

    /// A step whose tensors exceed the device's largest buffer would fail inside the GPU
    /// driver (or exhaust the wasm heap); refuse it before any work, naming the size that
    /// fits: a tile too large for the full-resolution steps, or an image too large for the
    /// whole-image step.
    ///
    /// # Errors
    /// [`WebError::BadInput`] saying which limit the job exceeds.
    pub fn check_fits(
        &self,
        image: &HostImage,
        options: &NaosdOptions,
        tiles: TileOptions,
    ) -> Result<(), WebError> {
        let limit = self.report().max_buffer_bytes;
        let s = options.scale;
        let (h, w) = (
            tiles.tile.min(image.height) * s,
            tiles.tile.min(image.width) * s,
        );
        if local_step_bytes(self.config(), h, w) > limit {
            return Err(WebError::BadInput(format!(
                "tileSize {} at x{s} needs buffers larger than this device's {} MB; use at \
                 most {}",
                tiles.tile,
                limit >> 20,
                self.default_tiles(s).tile
            )));
        }
        let needed = global_step_bytes(self.config(), image.height * s, image.width * s);
        if needed > limit {
            return Err(WebError::BadInput(format!(
                "a {}x{} image at x{s} needs a {} MB buffer for its whole-image step, more than \
                 this device's {} MB; choose a smaller image or scale",
                image.width,
                image.height,
                needed.div_ceil(1 << 20),
                limit >> 20
            )));
        }
        Ok(())
    }

    /// Upscales `image` tile by tile at `detail` of the weights' detail range (`None`: the
    /// file's default), after [`Self::check_fits`].
    ///
    /// # Errors
    /// As [`Self::check_fits`] and [`run_tiles`]; [`WebError::BadInput`] for a `detail`
    /// outside 0..=1 or for weights without a range.
    pub async fn upscale(
        &self,
        image: &HostImage,
        options: &NaosdOptions,
        detail: Option<f32>,
        tiles: TileOptions,
        events: &mut impl TileEvents,
    ) -> Result<Upscaled, WebError> {
        self.check_fits(image, options, tiles)?;
        match &self.loaded {
            Loaded::WebGpu { model, device, .. } => {
                let model = self.model_at(model, detail)?;
                run_tiles(&model, device, "webgpu", image, options, tiles, events).await
            }
            Loaded::Cpu { model, .. } => {
                let model = self.model_at(model, detail)?;
                run_tiles(
                    &model,
                    &Default::default(),
                    "cpu",
                    image,
                    options,
                    tiles,
                    events,
                )
                .await
            }
        }
    }
}

/// Hooks of the tile loop: where progress goes out and cancellation comes in.
pub trait TileEvents {
    /// Before step `index` of `total` (encode, global and decode steps); an error (e.g. [`WebError::Cancelled`]) stops the job.
    fn before(
        &mut self,
        index: usize,
        total: usize,
    ) -> impl core::future::Future<Output = Result<(), WebError>>;
    /// After a step was taken in: `done` of `total`.
    fn after(&mut self, done: usize, total: usize);
}

/// A finished job: the image and the plan that made it.
#[derive(Debug)]
pub struct Upscaled {
    pub image: HostImage,
    /// Tiles of the full-resolution (encode and decode) steps.
    pub tiles: usize,
    /// All steps: an encode and a decode step per tile, and the whole-image step.
    pub steps: usize,
}

/// The asynchronous tile loop on any backend.
///
/// # Errors
/// [`WebError::Model`] for a request the model rejects (checked before any work),
/// [`WebError::Backend`] when a read-back fails, or whatever `events.before` returns.
pub async fn run_tiles<B: Backend>(
    model: &Naosd<B>,
    device: &B::Device,
    backend: &'static str,
    image: &HostImage,
    options: &NaosdOptions,
    tiles: TileOptions,
    events: &mut impl TileEvents,
) -> Result<Upscaled, WebError> {
    let mut job = TiledUpscale::new(model.config(), image, options, tiles)?;
    let total = job.len();
    for index in 0..total {
        events.before(index, total).await?;
        let out = job.run(model, image, index, device)?;
        let data = out.into_data_async().await.map_err(|e| WebError::Backend {
            backend,
            message: format!("{e:?}"),
        })?;
        job.accept(index, data)?;
        events.after(index + 1, total);
    }
    let tiles = job.tiles();
    Ok(Upscaled {
        image: job.finish()?,
        tiles,
        steps: total,
    })
}

#[cfg(target_arch = "wasm32")]
mod gpu {
    //! WebGPU discovery and burn-wgpu setup (browser only).
    use std::cell::Cell;

    use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, graphics::WebGpu, init_setup_async};
    use js_sys::{Function, Promise, Reflect};
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;

    use super::AdapterReport;

    thread_local! {
        /// burn's WebGPU client is global per device; set it up once per worker.
        static INITIALISED: Cell<bool> = const { Cell::new(false) };
    }

    fn get(target: &JsValue, key: &str) -> JsValue {
        Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    }

    fn text(target: &JsValue, key: &str) -> String {
        get(target, key).as_string().unwrap_or_default()
    }

    fn number(target: &JsValue, key: &str) -> u64 {
        get(target, key).as_f64().map_or(0, |v| v as u64)
    }

    /// Asks the browser for an adapter first, so that a missing WebGPU is a message and not
    /// a panic inside burn, then sets up burn's client on the default device. With
    /// `refuse_software`, a software adapter is refused (the CPU backend is faster).
    pub async fn init_webgpu(refuse_software: bool) -> Result<(WgpuDevice, AdapterReport), String> {
        let navigator = get(&js_sys::global(), "navigator");
        let gpu = get(&navigator, "gpu");
        if gpu.is_undefined() || gpu.is_null() {
            return Err(
                "WebGPU is not available in this browser (navigator.gpu is missing)".into(),
            );
        }
        let request: Function = get(&gpu, "requestAdapter")
            .dyn_into()
            .map_err(|_| "navigator.gpu.requestAdapter is not a function".to_string())?;
        let promise: Promise = request
            .call0(&gpu)
            .map_err(|e| format!("requestAdapter failed: {e:?}"))?
            .dyn_into()
            .map_err(|_| "requestAdapter did not return a promise".to_string())?;
        let adapter = JsFuture::from(promise)
            .await
            .map_err(|e| format!("requestAdapter failed: {e:?}"))?;
        if adapter.is_null() || adapter.is_undefined() {
            return Err("the browser has WebGPU but offers no adapter".into());
        }
        let limits = get(&adapter, "limits");
        let info = get(&adapter, "info");
        let (architecture, description) = (text(&info, "architecture"), text(&info, "description"));
        let named = format!("{architecture} {description}").to_lowercase();
        let software = get(&info, "isFallbackAdapter").is_truthy()
            || get(&adapter, "isFallbackAdapter").is_truthy()
            || ["swiftshader", "llvmpipe", "lavapipe"]
                .iter()
                .any(|n| named.contains(n));
        if software && refuse_software {
            return Err(format!(
                "the only WebGPU adapter is a software rasteriser ({}), slower than the CPU \
                 backend; pass backend: \"webgpu\" to use it anyway",
                named.trim()
            ));
        }
        let report = AdapterReport {
            vendor: text(&info, "vendor"),
            architecture,
            description,
            software,
            max_buffer_size: number(&limits, "maxBufferSize"),
            max_storage_buffer_binding_size: number(&limits, "maxStorageBufferBindingSize"),
            max_compute_workgroup_storage_size: number(&limits, "maxComputeWorkgroupStorageSize"),
            max_compute_invocations_per_workgroup: number(
                &limits,
                "maxComputeInvocationsPerWorkgroup",
            ),
        };
        let device = WgpuDevice::default();
        if !INITIALISED.get() {
            init_setup_async::<WebGpu>(&device, RuntimeOptions::default()).await;
            INITIALISED.set(true);
        }
        Ok((device, report))
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod gpu {
    //! Natively the web crate runs on the CPU only (its tests); WebGPU is the browser's.
    use burn::backend::wgpu::WgpuDevice;

    use super::AdapterReport;

    pub async fn init_webgpu(_: bool) -> Result<(WgpuDevice, AdapterReport), String> {
        Err("WebGPU is only used in the browser".into())
    }
}
