//! The native side of GDPO-SR: backends, image IO, weight export and batch upscaling.
//! `main.rs` is the CLI over these modules.

pub mod backend;
pub mod data;
pub mod degrade;
pub mod loss;
pub mod metrics;
pub mod stages;
pub mod train;
pub mod export;
pub mod image_io;
pub mod info;
pub mod planar;
pub mod upscale;
