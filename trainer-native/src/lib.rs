//! The native side of GDPO-SR: backends, image IO, weight export and batch upscaling.
//! `main.rs` is the CLI over these modules.

pub mod backend;
pub mod export;
pub mod image_io;
pub mod info;
pub mod upscale;
