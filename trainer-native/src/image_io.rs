//! Image files to and from model tensors (`[1, 3, h, w]`, values in [-1, 1]).

use std::{io::Cursor, path::Path};

use anyhow::{Context, bail};
use burn::tensor::{Tensor, backend::Backend};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage, metadata::Orientation};

use crate::planar::Planar;

/// The longest image side any command decodes (docs/reliability.md). Past it, and past
/// [`MAX_DECODE_BYTES`], decoding stops at the header: a file that declares 10^10 pixels in
/// a few bytes (a decompression bomb) costs nothing.
pub const MAX_IMAGE_SIDE: u32 = 16384;
/// The most memory one decode may allocate (a 16384 x 16384 RGBA8 image is exactly 1 GiB).
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

/// A decoded picture as the user sees it: EXIF orientation applied, the first frame of an
/// animation, 8 bits per channel.
pub struct DecodedImage {
    pub rgb: RgbImage,
    /// Row-major transparency, present only when some pixel is not opaque.
    pub alpha: Option<Vec<u8>>,
}

/// Decodes an image file (format from its content, not its extension); errors name the file.
///
/// # Errors
/// When the file cannot be read, is empty, is not a supported image, is damaged, or its
/// declared size breaks the limits above or the `check_size(width, height)` of the caller
/// (called with the stored size, before any pixel is decoded).
pub fn decode_image(
    path: &Path,
    check_size: impl FnOnce(u32, u32) -> anyhow::Result<()>,
) -> anyhow::Result<DecodedImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode_image_bytes(&bytes, check_size).with_context(|| format!("{}", path.display()))
}

/// [`decode_image`] on bytes in memory (the fuzz tests drive this).
///
/// # Errors
/// As [`decode_image`].
pub fn decode_image_bytes(
    bytes: &[u8],
    check_size: impl FnOnce(u32, u32) -> anyhow::Result<()>,
) -> anyhow::Result<DecodedImage> {
    if bytes.is_empty() {
        bail!("the file is empty");
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    if reader.format().is_none() {
        bail!("not a recognised image: PNG, JPEG, WebP, BMP and GIF are supported");
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().context("cannot decode")?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        bail!("cannot decode: the image is empty ({width}x{height})");
    }
    check_size(width, height)?;
    // A damaged EXIF block should not cost the user the picture: shown as stored.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).context("cannot decode")?;
    img.apply_orientation(orientation);
    let alpha = img.color().has_alpha().then(|| {
        let rgba = img.to_rgba8();
        rgba.pixels().map(|p| p.0[3]).collect::<Vec<u8>>()
    });
    Ok(DecodedImage {
        rgb: img.to_rgb8(),
        alpha: alpha.filter(|a| a.iter().any(|&v| v != 255)),
    })
}

/// Decodes an image file to 8-bit RGB (orientation applied, transparency dropped: training
/// and evaluation images), within the limits above.
///
/// # Errors
/// As [`decode_image`].
pub fn decode_rgb8(path: &Path) -> anyhow::Result<RgbImage> {
    Ok(decode_image(path, |_, _| Ok(()))?.rgb)
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
