//! Browser bindings of GDPO-SR (wasm-bindgen).
//!
//! For now this exposes the weight-file inspection that the page needs before it downloads
//! a model into the GPU; the WebGPU upscaler (burn-wgpu) is the web issue's work. Every
//! export returns a `Result` whose error becomes a rejected promise / thrown `Error` with a
//! clear message: nothing panics across the boundary.

use serde::Serialize;
use thiserror::Error;
use wasm_bindgen::prelude::*;

/// Errors of the web crate, converted to JavaScript `Error`s at the boundary.
#[derive(Debug, Error)]
pub enum WebError {
    #[error(transparent)]
    Model(#[from] model::ModelError),
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bytes_give_a_clear_error() {
        let err = weight_summary(b"definitely not a weight file").unwrap_err();
        assert!(
            err.to_string().contains("not a valid GDPO-SR weight file"),
            "{err}"
        );
    }
}
