//! Native batch upscaling: a file or a folder, tiled exactly as the browser tiles, so the
//! same weights, seed and tile size give the same output on every platform.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use model::{
    HostImage, NaosdOptions, TileOptions, resample::bicubic_upsample_plane_u8,
    tiling::check_output_size, upscale_tiled,
};
use safetensors::{Dtype, tensor::TensorView};

use crate::{data::list_images, export::read_weights_at, export::write_atomically};

/// Device memory the native tiler plans for (the browser uses its adapter's limits).
pub const NATIVE_BUFFER_BUDGET: u64 = 1 << 30;

/// Upscales a file into a file, or every image of a folder into a folder (same relative
/// names, PNG).
pub struct Upscale<'a> {
    pub weights: &'a Path,
    pub input: &'a Path,
    pub output: &'a Path,
    pub options: NaosdOptions,
    /// Tile side in input pixels; `None`: sized for [`NATIVE_BUFFER_BUDGET`].
    pub tiles: Option<TileOptions>,
    /// Also write the exact output (`rgb`, f32 `[3, H, W]` in [0, 1]) as safetensors here
    /// (single-file mode): what the browser test compares against.
    pub tensor_out: Option<&'a Path>,
    /// Run each image once untimed before the timed run (benchmarks: GPU kernels compile on
    /// first use).
    pub warmup: bool,
    /// The point of the weights' detail range to run at (`None`: the file's default).
    pub detail: Option<f32>,
}

impl crate::backend::BackendTask for Upscale<'_> {
    /// `(input, output, width, height, seconds of inference)` per image.
    type Output = Vec<(PathBuf, PathBuf, usize, usize, f64)>;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Self::Output> {
        let model = read_weights_at::<B>(self.weights, self.detail, &device)?;
        let tiles = self.tiles.unwrap_or_else(|| {
            TileOptions::for_device(model.config(), self.options.scale, NATIVE_BUFFER_BUDGET)
        });
        let jobs: Vec<(PathBuf, PathBuf)> = if self.input.is_dir() {
            if self.tensor_out.is_some() {
                bail!("--tensor-out needs a single input file");
            }
            std::fs::create_dir_all(self.output)
                .with_context(|| format!("cannot create {}", self.output.display()))?;
            list_images(self.input)?
                .into_iter()
                .map(|p| {
                    let rel = p
                        .strip_prefix(self.input)
                        .unwrap_or(&p)
                        .with_extension("png");
                    (p.clone(), self.output.join(rel))
                })
                .collect()
        } else {
            vec![(self.input.to_path_buf(), self.output.to_path_buf())]
        };
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, eta {eta}")
                .expect("valid template"),
        );
        let mut done = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        for (input, output) in jobs {
            bar.set_message(input.display().to_string());
            let result = (|| -> anyhow::Result<(usize, usize, f64)> {
                let (image, alpha) = load_host_image(&input, self.options.scale)?;
                output_format(&output, alpha.is_some())?;
                if self.warmup {
                    upscale_tiled(&model, &image, &self.options, tiles, &device, |_, _| {})?;
                }
                let started = std::time::Instant::now();
                let sr = upscale_tiled(&model, &image, &self.options, tiles, &device, |d, t| {
                    bar.set_length(t as u64);
                    bar.set_position(d as u64);
                })
                .with_context(|| format!("cannot upscale {}", input.display()))?;
                let seconds = started.elapsed().as_secs_f64();
                // Transparency is carried through as in the browser: the alpha plane is
                // upscaled separately (bicubic), the network only sees colour.
                let alpha = alpha.map(|a| {
                    bicubic_upsample_plane_u8(&a, image.width, image.height, self.options.scale)
                });
                save_host_image(&sr, alpha.as_deref(), &output)?;
                if let Some(path) = self.tensor_out {
                    write_rgb_tensor(&sr, path)?;
                }
                Ok((sr.width, sr.height, seconds))
            })();
            match result {
                Ok((w, h, seconds)) => done.push((input, output, w, h, seconds)),
                // Every error above names its file already.
                Err(e) => failures.push(format!("  {e:#}")),
            }
        }
        bar.finish_and_clear();
        if !failures.is_empty() {
            bail!(
                "{} of {} images failed ({} written):\n{}",
                failures.len(),
                failures.len() + done.len(),
                done.len(),
                failures.join("\n")
            );
        }
        Ok(done)
    }
}

/// Decodes an image file into the model's host image (RGB in [-1, 1]) through the same
/// 8-bit conversion the browser uses, and its alpha plane when it has transparency. The
/// output size at `scale` is checked against the model's limit before any pixel is decoded.
///
/// # Errors
/// As [`crate::image_io::decode_image`], and when the output would be too large.
pub fn load_host_image(path: &Path, scale: usize) -> anyhow::Result<(HostImage, Option<Vec<u8>>)> {
    let img = crate::image_io::decode_image(path, |w, h| {
        Ok(check_output_size(w as usize, h as usize, scale)?)
    })?;
    let (w, h) = (img.rgb.width() as usize, img.rgb.height() as usize);
    Ok((
        HostImage::from_interleaved_u8(img.rgb.as_raw(), w, h, 3, 3)?,
        img.alpha,
    ))
}

/// The image format `path` names, checked to hold transparency when the image has some
/// (checked before the upscale too, so that a wrong extension costs no inference).
///
/// # Errors
/// When the extension is unknown, or names a format without an alpha channel (JPEG) for an
/// image with transparency.
fn output_format(path: &Path, has_alpha: bool) -> anyhow::Result<image::ImageFormat> {
    use image::ImageFormat::{Bmp, Png, WebP};
    let format = image::ImageFormat::from_path(path)
        .with_context(|| format!("unknown image extension: {}", path.display()))?;
    if has_alpha && !matches!(format, Png | WebP | Bmp) {
        bail!(
            "{}: the image has transparency, which {format:?} cannot store; write .png or .webp",
            path.display()
        );
    }
    Ok(format)
}

/// Writes a host image (and its alpha plane, if any) as an 8-bit file, format by extension,
/// atomically.
///
/// # Errors
/// When the format is unknown or cannot hold transparency that the image has, or on IO.
pub fn save_host_image(image: &HostImage, alpha: Option<&[u8]>, path: &Path) -> anyhow::Result<()> {
    let format = output_format(path, alpha.is_some())?;
    let (w, h) = (image.width as u32, image.height as u32);
    let picture: image::DynamicImage = match alpha {
        None => image::RgbImage::from_raw(w, h, image.to_interleaved_u8(3, 0))
            .context("image buffer size")?
            .into(),
        Some(_) => image::RgbaImage::from_raw(w, h, image.to_rgba_u8(alpha))
            .context("image buffer size")?
            .into(),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture
        .write_to(&mut bytes, format)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomically(path, &bytes.into_inner())
}

/// The exact output as safetensors: tensor `rgb`, f32 `[3, H, W]`, values in [0, 1].
pub fn write_rgb_tensor(image: &HostImage, path: &Path) -> anyhow::Result<()> {
    let unit = image.to_unit_range();
    let bytes: Vec<u8> = unit.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(
        Dtype::F32,
        vec![image.channels, image.height, image.width],
        &bytes,
    )?;
    let file = safetensors::serialize([("rgb", view)], None)?;
    write_atomically(path, &file)
}
