//! Image files to and from model tensors (`[1, 3, h, w]`, values in [-1, 1]).

use std::path::Path;

use anyhow::Context;
use burn::tensor::{Tensor, backend::Backend};
use image::{ImageReader, RgbImage};

use crate::planar::Planar;

/// Decodes an image file (format from its content, not its extension) to 8-bit RGB; errors
/// name the file.
pub fn decode_rgb8(path: &Path) -> anyhow::Result<RgbImage> {
    Ok(ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()?
        .decode()
        .with_context(|| format!("cannot decode {}", path.display()))?
        .to_rgb8())
}

/// Decodes an image file to an RGB tensor in [-1, 1].
pub fn load_rgb<B: Backend>(path: &Path, device: &B::Device) -> anyhow::Result<Tensor<B, 4>> {
    Ok(rgb_to_tensor(&decode_rgb8(path)?, device))
}

pub fn rgb_to_tensor<B: Backend>(img: &RgbImage, device: &B::Device) -> Tensor<B, 4> {
    planars_to_tensor(&[Planar::from_rgb8(img)], device)
}

/// Quantises a `[1, 3, h, w]` tensor in [-1, 1] to 8-bit RGB (the first image of a batch).
pub fn tensor_to_rgb<B: Backend>(t: Tensor<B, 4>) -> anyhow::Result<RgbImage> {
    let first = tensor_to_planars(t)?
        .into_iter()
        .next()
        .context("empty batch")?;
    Ok(first.to_rgb8())
}

/// `[0, 1]` planar images (same size) to a `[n, 3, h, w]` tensor in [-1, 1].
///
/// # Panics
/// When the list is empty or sizes differ.
pub fn planars_to_tensor<B: Backend>(images: &[Planar], device: &B::Device) -> Tensor<B, 4> {
    crate::data::HostBatch::stack(0, images).to_tensor(device)
}

/// A `[n, 3, h, w]` tensor in [-1, 1] to `[0, 1]` planar images (clamped).
pub fn tensor_to_planars<B: Backend>(t: Tensor<B, 4>) -> anyhow::Result<Vec<Planar>> {
    let [n, c, h, w] = t.dims();
    anyhow::ensure!(c == 3, "expected 3 channels, got {c}");
    let values: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(values
        .chunks_exact(3 * h * w)
        .take(n)
        .map(|chunk| Planar {
            width: w,
            height: h,
            data: chunk
                .iter()
                .map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0))
                .collect(),
        })
        .collect())
}

/// Side-by-side strip of images of equal height (sample grids).
pub fn hstack(images: &[&Planar]) -> Planar {
    let height = images.iter().map(|i| i.height).max().unwrap_or(0);
    let width = images.iter().map(|i| i.width).sum();
    let mut out = Planar::zeros(width, height);
    let mut x0 = 0;
    for img in images {
        for c in 0..3 {
            for y in 0..img.height {
                for x in 0..img.width {
                    *out.get_mut(c, x0 + x, y) = img.get(c, x, y);
                }
            }
        }
        x0 += img.width;
    }
    out
}
