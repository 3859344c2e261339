//! Native upscaling of one image file with a weight file.

use std::path::Path;

use anyhow::Context;
use burn::tensor::backend::Backend;
use model::{NaosdOptions, load_weights};

use crate::{backend::BackendTask, image_io};

/// Upscales `input` into `output` (PNG, JPEG, ... by extension).
pub struct UpscaleFile<'a> {
    pub weights: &'a Path,
    pub input: &'a Path,
    pub output: &'a Path,
    pub options: NaosdOptions,
}

impl BackendTask for UpscaleFile<'_> {
    type Output = (u32, u32);
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<(u32, u32)> {
        let bytes = std::fs::read(self.weights)
            .with_context(|| format!("cannot read {}", self.weights.display()))?;
        let model = load_weights::<B>(&bytes, &device)
            .with_context(|| self.weights.display().to_string())?;
        let lr = image_io::load_rgb::<B>(self.input, &device)?;
        let sr = model.upscale(lr, &self.options)?;
        let img = image_io::tensor_to_rgb(sr)?;
        img.save(self.output)
            .with_context(|| format!("cannot write {}", self.output.display()))?;
        Ok(img.dimensions())
    }
}
