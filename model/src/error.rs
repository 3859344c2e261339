//! The model crate's error type: every fallible operation (config validation, weight
//! loading, input checks) returns a [`ModelError`] instead of panicking, so that the web
//! module can turn it into a rejected promise and keep working.

use thiserror::Error;

/// Errors raised by the model crate.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    /// A [`crate::ModelConfig`] whose sizes cannot form a network.
    #[error("invalid model config: {0}")]
    InvalidConfig(String),
    /// Input tensors or options the pipeline cannot process.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The bytes are not a weight file (truncated, not safetensors, missing metadata).
    #[error("not a valid GDPO-SR weight file: {0}")]
    WeightFormat(String),
    /// A weight file written by an incompatible version of the format.
    #[error(
        "unsupported weight format version {found} (this build reads versions 1 to {supported})"
    )]
    UnsupportedVersion { found: String, supported: u32 },
    /// The stored content hash does not match the tensors: the file is corrupted.
    #[error("weight file is corrupted: content hash {found} does not match the stored {expected}")]
    HashMismatch { expected: String, found: String },
    /// A tensor the architecture needs is absent from the file.
    #[error("weight file lacks tensor `{0}` (was it written for another architecture?)")]
    MissingTensor(String),
    /// The file holds a tensor the architecture does not have.
    #[error("weight file has tensor `{0}` that this architecture does not use")]
    UnexpectedTensor(String),
    /// A tensor's stored shape differs from the architecture's.
    #[error("tensor `{name}` has shape {found:?} in the file but {expected:?} in the model")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

/// Result alias of the model crate.
pub type Result<T, E = ModelError> = core::result::Result<T, E>;
