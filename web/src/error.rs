//! Errors of the web crate and their JavaScript form.

use thiserror::Error;
use wasm_bindgen::JsValue;

/// Everything that can go wrong in the browser API. Each becomes a JavaScript `Error` whose
/// `name` tells the kind (`AbortError` for cancellation, as `fetch` does) and whose message
/// says what to do.
#[derive(Debug, Error)]
pub enum WebError {
    /// The model rejected the weights or the request (typed errors of the model crate).
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// A bad argument from JavaScript.
    #[error("{0}")]
    BadInput(String),
    /// The backend failed (device lost, read-back failed).
    #[error("the {backend} backend failed: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
    /// The caller's AbortSignal fired.
    #[error("the upscale was cancelled")]
    Cancelled,
}

impl WebError {
    /// The JavaScript `Error.name` of this error.
    pub fn js_name(&self) -> &'static str {
        match self {
            Self::Cancelled => "AbortError",
            Self::BadInput(_) => "TypeError",
            Self::Model(_) | Self::Backend { .. } => "Error",
        }
    }
}

impl From<WebError> for JsValue {
    fn from(e: WebError) -> Self {
        let err = js_sys::Error::new(&e.to_string());
        err.set_name(e.js_name());
        err.into()
    }
}
