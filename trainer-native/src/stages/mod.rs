//! The training stages of GDPO-SR, one file each, and what they share (configs, validation
//! images). Each stage's output is a portable weight file (f32), which the next stage starts
//! from: the same contract the browser uses.

pub mod autoencoder;
pub mod gdpo;
pub mod naosd;

use std::path::Path;

use crate::{data::ImageFolder, planar::Planar};

/// Up to `max_images` centre crops of the validation folder, each side the largest multiple
/// of `multiple` not above `max_side`.
///
/// # Errors
/// When the folder cannot be read or has no image of at least `multiple` px.
pub fn validation_crops(
    folder: &Path,
    multiple: usize,
    max_side: usize,
    max_images: usize,
) -> anyhow::Result<Vec<Planar>> {
    let images = ImageFolder::load(folder, multiple)?;
    Ok((0..images.len().min(max_images))
        .map(|i| {
            let img = Planar::from_rgb8(images.image(i));
            let side = |len: usize| (len.min(max_side) / multiple) * multiple;
            let (w, h) = (side(img.width), side(img.height));
            img.crop((img.width - w) / 2, (img.height - h) / 2, w, h)
        })
        .collect())
}
