//! Native upscaling of one image file with a weight file.

use std::path::Path;

use anyhow::Context;
use burn::tensor::backend::Backend;
use model::NaosdOptions;

use crate::{backend::BackendTask, export::read_weights, image_io};

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
        let model = read_weights::<B>(self.weights, &device)?;
        let lr = image_io::load_rgb::<B>(self.input, &device)?;
        let sr = model.upscale(lr, &self.options)?;
        let img = image_io::tensor_to_rgb(sr)?;
        img.save(self.output)
            .with_context(|| format!("cannot write {}", self.output.display()))?;
        Ok(img.dimensions())
    }
}
