//! The native side of GDPO-SR: backends, image IO, weight export and batch upscaling.
//! `main.rs` is the CLI over these modules.

pub mod backend;
pub mod bench;
pub mod data;
pub mod degrade;
pub mod eval;
pub mod export;
pub mod fault;
pub mod image_io;
pub mod info;
pub mod iqa;
pub mod loss;
pub mod memory;
pub mod metrics;
pub mod planar;
pub mod pretrained;
pub mod reward;
pub mod stages;
pub mod third_party;
pub mod train;
pub mod upscale;

/// Parses a TOML config; unknown keys are errors, so a typo fails here and not mid-run.
///
/// # Errors
/// When the file cannot be read or does not match `T`.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
}
