//! Browser bindings of GDPO-SR (wasm-bindgen): the one-step generative upscaler on WebGPU.
//!
//! - [`api`]: the JavaScript API (`Upscaler.load`, `upscale`, `info`) with argument checks;
//! - [`engine`]: the model on burn-wgpu (WebGPU) or burn-flex (CPU fallback) and the
//!   asynchronous tile loop, with progress and cancellation between tiles;
//! - [`error`]: errors and their JavaScript form.
//!
//! Everything that can fail returns a `Result` that becomes a rejected promise with a clear
//! message; inputs are checked before any device work, so bad input never panics the module.
//! The npm package and the page run this module inside a Web Worker (`js/`), so the page never
//! freezes.

pub mod api;
pub mod engine;
pub mod error;

use serde::Serialize;
use wasm_bindgen::prelude::*;

pub use error::WebError;

/// What `weightInfo` reports about a weight file.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightSummary {
    pub preset: String,
    pub parameters: usize,
    pub tensors: usize,
    pub content_hash: String,
    pub format_version: u32,
    pub config: model::ModelConfig,
}

/// Verifies a weight file (format, version, content hash) and summarises it.
///
/// # Errors
/// [`WebError::Model`] with the loader's typed error.
pub fn weight_summary(bytes: &[u8]) -> Result<WeightSummary, WebError> {
    let info = model::read_weight_info(bytes)?;
    Ok(WeightSummary {
        preset: info.config.name.clone(),
        parameters: info.parameters,
        tensors: info.tensors,
        content_hash: info.content_hash,
        format_version: model::FORMAT_VERSION,
        config: info.config,
    })
}

/// Installs the panic hook so that a bug shows a readable message in the console.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// `weightInfo(bytes: Uint8Array): string` — JSON summary of a verified weight file.
#[wasm_bindgen(js_name = weightInfo)]
pub fn weight_info(bytes: &[u8]) -> Result<String, JsError> {
    let summary = weight_summary(bytes).map_err(|e| JsError::new(&e.to_string()))?;
    serde_json::to_string(&summary).map_err(|e| JsError::new(&e.to_string()))
}
