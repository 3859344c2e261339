//! Image files to and from model tensors (`[1, 3, h, w]`, values in [-1, 1]).

use std::path::Path;

use anyhow::Context;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use image::{ImageReader, RgbImage};

/// Decodes an image file (format from its content) to an RGB tensor in [-1, 1].
pub fn load_rgb<B: Backend>(path: &Path, device: &B::Device) -> anyhow::Result<Tensor<B, 4>> {
    let img = ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()?
        .decode()
        .with_context(|| format!("cannot decode {}", path.display()))?
        .to_rgb8();
    Ok(rgb_to_tensor(&img, device))
}

pub fn rgb_to_tensor<B: Backend>(img: &RgbImage, device: &B::Device) -> Tensor<B, 4> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut planar = vec![0f32; 3 * h * w];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            planar[c * h * w + i] = px[c] as f32 / 127.5 - 1.0;
        }
    }
    Tensor::from_data(TensorData::new(planar, [1, 3, h, w]), device)
}

/// Quantises a `[1, 3, h, w]` tensor in [-1, 1] to 8-bit RGB.
pub fn tensor_to_rgb<B: Backend>(t: Tensor<B, 4>) -> anyhow::Result<RgbImage> {
    let [_, c, h, w] = t.dims();
    anyhow::ensure!(c == 3, "expected 3 channels, got {c}");
    let values: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let to_u8 = |v: f32| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
    Ok(RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb([0, 1, 2].map(|c| to_u8(values[c * h * w + i])))
    }))
}

/// `[0, 1]` planar images (same size) to a `[n, 3, h, w]` tensor in [-1, 1].
///
/// # Panics
/// When the list is empty or sizes differ.
pub fn planars_to_tensor<B: Backend>(images: &[crate::planar::Planar], device: &B::Device) -> Tensor<B, 4> {
    crate::data::HostBatch::stack(0, images).to_tensor(device)
}

/// A `[n, 3, h, w]` tensor in [-1, 1] to `[0, 1]` planar images (clamped).
pub fn tensor_to_planars<B: Backend>(t: Tensor<B, 4>) -> anyhow::Result<Vec<crate::planar::Planar>> {
    let [n, c, h, w] = t.dims();
    anyhow::ensure!(c == 3, "expected 3 channels, got {c}");
    let values: Vec<f32> = t.into_data().convert::<f32>().to_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(values
        .chunks_exact(3 * h * w)
        .take(n)
        .map(|chunk| crate::planar::Planar {
            width: w,
            height: h,
            data: chunk.iter().map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0)).collect(),
        })
        .collect())
}

/// Side-by-side strip of images of equal height (sample grids).
pub fn hstack(images: &[&crate::planar::Planar]) -> crate::planar::Planar {
    let height = images.iter().map(|i| i.height).max().unwrap_or(0);
    let width = images.iter().map(|i| i.width).sum();
    let mut out = crate::planar::Planar::zeros(width, height);
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
