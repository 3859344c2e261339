//! # GDPO-SR model
//!
//! The shared, backend-generic model of the GDPO-SR one-step diffusion super-resolution
//! system (see `shared/docs/method.md` of the project, restated in `docs/architecture.md`):
//!
//! - [`schedule`]: the 1000-step scaled-linear DDPM schedule, `add_noise`, x0-from-eps;
//! - [`autoencoder`]: encoder E and decoder D, the TAESD family (pretrained TAEF2 in the
//!   shipped model), split into a tileable local part and a whole-image global part;
//! - [`unet`]: the timestep-conditioned eps-UNet;
//! - [`pipeline`]: the NAOSD one-step pipeline (bicubic, encode, noise at `t_add`, one UNet
//!   call at `t_diff`, decode, colour fix);
//! - [`lora`]: LoRA adapters for conv and linear layers, and their merge;
//! - [`conv`]: the layers' convolution, native or im2col + matrix product (faster on CUDA);
//! - [`weights`]: the portable, hashed, f16 weight file (bytes in, bytes out), with an
//!   optional detail range (two fine-tunings of one model, used at any point between them);
//! - [`noise`]: the seeded, portable noise field shared by every backend;
//! - [`tiling`]: exact tiled inference (local parts per tile with a halo, the global parts once
//!   on the whole 1/8-resolution latent).
//!
//! The crate enables no burn backend and does no IO: randomness comes in as a seed.

pub mod autoencoder;
pub mod blocks;
pub mod colour;
pub mod conv;
pub mod error;
pub mod lora;
pub mod noise;
pub mod pipeline;
pub mod preset;
pub mod resample;
pub mod schedule;
pub mod tiling;
pub mod unet;
pub mod weights;

#[cfg(test)]
mod test_backend;

pub use colour::ColourFix;
pub use error::{ModelError, Result};
pub use lora::{LoraConfig, LoraTarget};
pub use noise::{NoiseField, NoiseWindow};
pub use pipeline::{MAX_SCALE, Naosd, NaosdOptions, NoiseSource};
pub use preset::{AutoencoderConfig, ModelConfig, UNetConfig};
pub use schedule::NoiseSchedule;
pub use tiling::{HostImage, MAX_OUTPUT_PIXELS, TileOptions, TiledUpscale, upscale_tiled};
pub use weights::{
    DetailRange, FORMAT_VERSION, StoredPrecision, WeightInfo, load_trained_part,
    load_trained_part_with_range, load_weights, load_weights_with_range, named_parameters,
    read_detail_range, read_weight_info, replace_parameters, save_detail_range, save_trained_part,
    save_weights,
};
