//! The training stages of GDPO-SR, one file each, and what they share (configs, validation
//! images). Each stage's output is a portable weight file (f32), which the next stage starts
//! from: the same contract the browser uses.

pub mod autoencoder;
pub mod gdpo;
pub mod naosd;

use std::path::Path;

use rand::Rng;

use crate::{
    data::{ImageFolder, item_rng},
    degrade::{self, DegradationConfig},
    planar::Planar,
};

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

/// A random `crop x crop` HR crop of the dataset and its LR by the seeded Real-ESRGAN
/// degradation: one training pair of the stages that learn on degraded inputs.
///
/// # Errors
/// When the degradation fails.
pub fn degraded_crop(
    dataset: &ImageFolder,
    degradation: &DegradationConfig,
    crop: usize,
    rng: &mut impl Rng,
) -> anyhow::Result<(Planar, Planar)> {
    let hr = dataset.random_crop(crop, rng);
    let params = degrade::sample(degradation, crop, crop, rng);
    let lr = degrade::apply(&params, &hr)?;
    Ok((hr, lr))
}

/// [`validation_crops`] with their LR, degraded with a fixed seed per image so that every
/// validation sees the same inputs.
///
/// # Errors
/// As [`validation_crops`], and when the degradation fails.
pub fn degraded_validation(
    folder: &Path,
    multiple: usize,
    max_side: usize,
    degradation: &DegradationConfig,
) -> anyhow::Result<Vec<(Planar, Planar)>> {
    validation_crops(folder, multiple, max_side, 8)?
        .into_iter()
        .enumerate()
        .map(|(i, hr)| {
            let mut rng = item_rng(0x5eed, u64::MAX, i as u64);
            let params = degrade::sample(degradation, hr.width, hr.height, &mut rng);
            let lr = degrade::apply(&params, &hr)?;
            Ok((hr, lr))
        })
        .collect()
}
