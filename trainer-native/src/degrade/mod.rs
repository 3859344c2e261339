//! The Real-ESRGAN second-order degradation, x4 (method.md section 3): low-quality
//! inputs made on the fly from high-resolution crops, after BasicSR's
//! `realesrgan_dataset.py` (kernel sampling) and `realesrgan_model.py` (the pipeline).
//!
//! Sampling and applying are split so that a degradation is plain data:
//! [`sample`] draws every random choice into [`DegradationParams`] (which serialises to
//! TOML), and [`apply`] is a pure function of the parameters and the HR image; the
//! per-pixel noise comes from a ChaCha8 generator seeded by `noise_seed`.
//!
//! Pipeline: blur, random resize, noise, JPEG (first order); optional blur, resize
//! relative to `HR / scale`, noise, then in random order {resize to `HR / scale` + optional
//! sinc filter} and JPEG (second order); finally clamp and quantise to 8 bits. The LQ
//! image is exactly `HR / scale`: it is not resized back up.

pub mod config;
pub mod kernels;
pub mod ops;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use config::{ConfigError, DegradationConfig, KernelProbs, ResizeProbs};
pub use kernels::{Kernel, KernelFamily, KernelSpec};
pub use ops::Interp;

use crate::planar::Planar;

/// Which way a random resize went (BasicSR's `updown_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeKind {
    Up,
    Down,
    Keep,
}

/// One sampled random resize.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResizeStep {
    pub kind: ResizeKind,
    /// The scale factor (1 for `Keep`). First order: relative to the current image;
    /// second order: relative to `HR / scale`.
    pub factor: f32,
    pub interp: Interp,
}

/// The kind of a noise step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    Gaussian,
    Poisson,
}

/// One sampled noise step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoiseStep {
    pub kind: NoiseKind,
    /// Gaussian: the sigma in 8-bit units (divided by 255 when applied); Poisson: the scale.
    pub amount: f32,
    /// The same noise in all three channels.
    pub gray: bool,
}

/// The order of the last two operations (BasicSR draws it 50/50).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalOrder {
    /// Resize to `HR / scale` and sinc-filter, then JPEG.
    ResizeThenJpeg,
    /// JPEG, then resize to `HR / scale` and sinc-filter.
    JpegThenResize,
}

/// The sampled first-order degradation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FirstOrder {
    pub jpeg_quality: u8,
    pub kernel: KernelSpec,
    pub resize: ResizeStep,
    pub noise: NoiseStep,
}

/// The sampled second-order degradation, before the final step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SecondOrder {
    pub jpeg_quality: u8,
    /// `None` when the second blur was skipped.
    pub kernel: Option<KernelSpec>,
    pub resize: ResizeStep,
    pub noise: NoiseStep,
}

/// The sampled final resize-to-LQ, sinc filter and JPEG ordering.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FinalStep {
    pub order: FinalOrder,
    pub interp: Interp,
    /// `None` when the final sinc filter was skipped.
    pub sinc: Option<KernelSpec>,
}

/// Every random choice of one degradation: `apply` needs nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DegradationParams {
    pub scale: usize,
    /// The HR size the parameters were sampled for; `apply` checks it.
    pub gt_width: usize,
    pub gt_height: usize,
    /// Seeds the ChaCha8 generator of the per-pixel noise. Kept below 2^63 by `sample`
    /// because TOML integers are signed 64-bit.
    pub noise_seed: u64,
    pub first: FirstOrder,
    pub second: SecondOrder,
    pub final_step: FinalStep,
}

/// Why an HR image cannot be degraded.
#[derive(Debug, thiserror::Error)]
pub enum DegradeError {
    #[error("the scale must be at least 1")]
    ZeroScale,
    #[error("HR size {width}x{height} is not divisible by the scale {scale}")]
    NotDivisible {
        width: usize,
        height: usize,
        scale: usize,
    },
    #[error("HR size {width}x{height} is smaller than {min}x{min} (4 x the scale)")]
    TooSmall {
        width: usize,
        height: usize,
        min: usize,
    },
    #[error(
        "HR size {width}x{height} differs from the {expected_width}x{expected_height} the parameters were sampled for"
    )]
    SizeMismatch {
        width: usize,
        height: usize,
        expected_width: usize,
        expected_height: usize,
    },
    #[error("JPEG round trip failed: {0}")]
    Jpeg(#[from] image::ImageError),
}

/// Checks that an HR size can be degraded by `scale`: divisible, and at least `4 * scale`
/// on each side so that the LQ image is at least 4 px.
pub fn check_gt_size(width: usize, height: usize, scale: usize) -> Result<(), DegradeError> {
    if scale == 0 {
        return Err(DegradeError::ZeroScale);
    }
    let min = 4 * scale;
    if width < min || height < min {
        return Err(DegradeError::TooSmall { width, height, min });
    }
    if !width.is_multiple_of(scale) || !height.is_multiple_of(scale) {
        return Err(DegradeError::NotDivisible {
            width,
            height,
            scale,
        });
    }
    Ok(())
}

/// Uniform in `[lo, hi]`; never panics on an empty range (gives `lo`).
fn uniform(rng: &mut impl Rng, [lo, hi]: [f32; 2]) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// An index drawn with the given (unnormalised) weights, like Python's `random.choices`.
fn choose_weighted(rng: &mut impl Rng, weights: &[f32]) -> usize {
    let total: f32 = weights.iter().sum();
    let u = rng.random::<f32>() * total;
    let mut acc = 0.0;
    for (i, &w) in weights.iter().enumerate() {
        acc += w;
        if u < acc {
            return i;
        }
    }
    // Rounding can leave `u` at the total: fall back to the last index with weight.
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

/// An odd size in `[min, max]`, uniformly (BasicSR's `random.choice(kernel_range)`).
fn sample_kernel_size(rng: &mut impl Rng, [min, max]: [usize; 2]) -> usize {
    let choices = (max.saturating_sub(min)) / 2 + 1;
    min + 2 * rng.random_range(0..choices)
}

/// BasicSR's shape exponent draw: half the time below 1, half the time above (each part
/// clamped to the range), so that both sharper and flatter shapes are common.
fn sample_beta(rng: &mut impl Rng, [lo, hi]: [f32; 2]) -> f32 {
    let one = 1.0f32.clamp(lo, hi);
    if rng.random::<f32>() < 0.5 {
        uniform(rng, [lo, one])
    } else {
        uniform(rng, [one, hi])
    }
}

/// The ranges of one order's blur.
struct BlurRanges {
    sinc_prob: f32,
    probs: KernelProbs,
    sigma: [f32; 2],
    betag: [f32; 2],
    betap: [f32; 2],
}

fn sample_sinc(rng: &mut impl Rng, size: usize, cutoff: [f32; 2]) -> KernelSpec {
    KernelSpec {
        family: KernelFamily::Sinc,
        size,
        sigma_x: 0.0,
        sigma_y: 0.0,
        rotation: 0.0,
        beta: 1.0,
        omega_c: uniform(rng, cutoff),
    }
}

/// One blur kernel, as BasicSR's dataset draws `kernel` / `kernel2`.
fn sample_kernel(cfg: &DegradationConfig, b: &BlurRanges, rng: &mut impl Rng) -> KernelSpec {
    let size = sample_kernel_size(rng, cfg.kernel_size);
    if rng.random::<f32>() < b.sinc_prob {
        let cutoff = if size < cfg.sinc_large_kernel {
            cfg.sinc_cutoff_small
        } else {
            cfg.sinc_cutoff_large
        };
        return sample_sinc(rng, size, cutoff);
    }
    let family = KernelFamily::GAUSSIAN_LIKE[choose_weighted(rng, &b.probs.as_array())];
    let sigma_x = uniform(rng, b.sigma);
    let (sigma_y, rotation) = if family.is_isotropic() {
        (sigma_x, 0.0)
    } else {
        (uniform(rng, b.sigma), uniform(rng, cfg.rotation_range))
    };
    let beta = match family {
        KernelFamily::GeneralizedIso | KernelFamily::GeneralizedAniso => sample_beta(rng, b.betag),
        KernelFamily::PlateauIso | KernelFamily::PlateauAniso => sample_beta(rng, b.betap),
        _ => 1.0,
    };
    KernelSpec {
        family,
        size,
        sigma_x,
        sigma_y,
        rotation,
        beta,
        omega_c: 0.0,
    }
}

fn sample_interp(rng: &mut impl Rng, modes: &[Interp]) -> Interp {
    match modes.len() {
        0 => Interp::Bicubic,
        n => modes[rng.random_range(0..n)],
    }
}

fn sample_resize(
    rng: &mut impl Rng,
    probs: ResizeProbs,
    up: [f32; 2],
    down: [f32; 2],
    modes: &[Interp],
) -> ResizeStep {
    let (kind, factor) = match choose_weighted(rng, &probs.as_array()) {
        0 => (ResizeKind::Up, uniform(rng, up)),
        1 => (ResizeKind::Down, uniform(rng, down)),
        _ => (ResizeKind::Keep, 1.0),
    };
    ResizeStep {
        kind,
        factor,
        interp: sample_interp(rng, modes),
    }
}

fn sample_noise(
    rng: &mut impl Rng,
    gaussian_prob: f32,
    sigma: [f32; 2],
    poisson_scale: [f32; 2],
    gray_prob: f32,
) -> NoiseStep {
    let (kind, amount) = if rng.random::<f32>() < gaussian_prob {
        (NoiseKind::Gaussian, uniform(rng, sigma))
    } else {
        (NoiseKind::Poisson, uniform(rng, poisson_scale))
    };
    NoiseStep {
        kind,
        amount,
        gray: rng.random::<f32>() < gray_prob,
    }
}

fn sample_quality(rng: &mut impl Rng, [lo, hi]: [u8; 2]) -> u8 {
    rng.random_range(lo.min(hi)..=hi)
}

/// Draws every random choice of one degradation of a `gt_width x gt_height` HR image.
///
/// `cfg` should have passed [`DegradationConfig::validate`]; an invalid one does not
/// panic here but can give meaningless parameters.
pub fn sample(
    cfg: &DegradationConfig,
    gt_width: usize,
    gt_height: usize,
    rng: &mut impl Rng,
) -> DegradationParams {
    let blur1 = BlurRanges {
        sinc_prob: cfg.sinc_prob,
        probs: cfg.kernel_probs,
        sigma: cfg.blur_sigma,
        betag: cfg.betag_range,
        betap: cfg.betap_range,
    };
    let blur2 = BlurRanges {
        sinc_prob: cfg.sinc_prob2,
        probs: cfg.kernel_probs2,
        sigma: cfg.blur_sigma2,
        betag: cfg.betag_range2,
        betap: cfg.betap_range2,
    };
    // Kernels first, as the dataset does, then the model's choices in pipeline order.
    let kernel1 = sample_kernel(cfg, &blur1, rng);
    let kernel2 = sample_kernel(cfg, &blur2, rng);
    let sinc = if rng.random::<f32>() < cfg.final_sinc_prob {
        let size = sample_kernel_size(rng, cfg.kernel_size);
        Some(sample_sinc(rng, size, cfg.final_sinc_cutoff))
    } else {
        None
    };

    let first = FirstOrder {
        kernel: kernel1,
        resize: sample_resize(
            rng,
            cfg.resize_prob,
            cfg.resize_up,
            cfg.resize_down,
            &cfg.resize_modes,
        ),
        noise: sample_noise(
            rng,
            cfg.gaussian_noise_prob,
            cfg.noise_range,
            cfg.poisson_scale_range,
            cfg.gray_noise_prob,
        ),
        jpeg_quality: sample_quality(rng, cfg.jpeg_range),
    };
    let second = SecondOrder {
        kernel: (rng.random::<f32>() < cfg.second_blur_prob).then_some(kernel2),
        resize: sample_resize(
            rng,
            cfg.resize_prob2,
            cfg.resize_up2,
            cfg.resize_down2,
            &cfg.resize_modes,
        ),
        noise: sample_noise(
            rng,
            cfg.gaussian_noise_prob2,
            cfg.noise_range2,
            cfg.poisson_scale_range2,
            cfg.gray_noise_prob2,
        ),
        jpeg_quality: sample_quality(rng, cfg.jpeg_range2),
    };
    let order = if rng.random::<f32>() < cfg.resize_then_jpeg_prob {
        FinalOrder::ResizeThenJpeg
    } else {
        FinalOrder::JpegThenResize
    };
    let final_step = FinalStep {
        order,
        interp: sample_interp(rng, &cfg.resize_modes),
        sinc,
    };
    DegradationParams {
        scale: cfg.scale,
        gt_width,
        gt_height,
        noise_seed: rng.random::<u64>() >> 1,
        first,
        second,
        final_step,
    }
}

/// `floor(len * factor)`, at least 1 (PyTorch's output size for a scale factor).
fn scaled(len: f64, factor: f32) -> usize {
    ((len * factor as f64).floor() as usize).max(1)
}

fn add_noise(img: &mut Planar, noise: &NoiseStep, rng: &mut impl Rng) {
    match noise.kind {
        NoiseKind::Gaussian => ops::add_gaussian_noise(img, noise.amount / 255.0, noise.gray, rng),
        NoiseKind::Poisson => ops::add_poisson_noise(img, noise.amount, noise.gray, rng),
    }
}

/// Degrades `gt` into its `HR / scale` low-quality counterpart with the choices in
/// `params`. Pure: the same parameters and image give a bit-identical result.
pub fn apply(params: &DegradationParams, gt: &Planar) -> Result<Planar, DegradeError> {
    let scale = params.scale;
    check_gt_size(gt.width, gt.height, scale)?;
    if (gt.width, gt.height) != (params.gt_width, params.gt_height) {
        return Err(DegradeError::SizeMismatch {
            width: gt.width,
            height: gt.height,
            expected_width: params.gt_width,
            expected_height: params.gt_height,
        });
    }
    let (lq_w, lq_h) = (gt.width / scale, gt.height / scale);
    let mut rng = ChaCha8Rng::seed_from_u64(params.noise_seed);

    // First order.
    let p = &params.first;
    let mut out = ops::filter2d(gt, &p.kernel.build());
    let (w, h) = (
        scaled(out.width as f64, p.resize.factor),
        scaled(out.height as f64, p.resize.factor),
    );
    out = ops::resize(&out, w, h, p.resize.interp);
    add_noise(&mut out, &p.noise, &mut rng);
    out = ops::jpeg(&out, p.jpeg_quality)?;

    // Second order: the resize is relative to the LQ size, not to the current image.
    let p = &params.second;
    if let Some(kernel) = &p.kernel {
        out = ops::filter2d(&out, &kernel.build());
    }
    let (w, h) = (
        scaled(lq_w as f64, p.resize.factor),
        scaled(lq_h as f64, p.resize.factor),
    );
    out = ops::resize(&out, w, h, p.resize.interp);
    add_noise(&mut out, &p.noise, &mut rng);

    let f = &params.final_step;
    let sinc = f.sinc.map(|k| k.build());
    let to_lq = |img: &Planar| {
        let resized = ops::resize(img, lq_w, lq_h, f.interp);
        match &sinc {
            Some(k) => ops::filter2d(&resized, k),
            None => resized,
        }
    };
    out = match f.order {
        FinalOrder::ResizeThenJpeg => ops::jpeg(&to_lq(&out), p.jpeg_quality)?,
        FinalOrder::JpegThenResize => to_lq(&ops::jpeg(&out, p.jpeg_quality)?),
    };

    for v in &mut out.data {
        *v = (*v * 255.0).round().clamp(0.0, 255.0) / 255.0;
    }
    Ok(out)
}

/// The centre `crop x crop` window, each side first limited to the image and then rounded
/// down to a multiple of `scale`.
fn centre_crop(img: &Planar, crop: usize, scale: usize) -> Planar {
    let cw = crop.min(img.width) / scale * scale;
    let ch = crop.min(img.height) / scale * scale;
    img.crop((img.width - cw) / 2, (img.height - ch) / 2, cw, ch)
}

fn is_image_file(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    path.is_file() && ext.is_some_and(|e| crate::data::IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Degrades the images of a folder into HR/LR pairs, for inspecting the degradation.
///
/// Takes the PNG/JPEG/BMP/WebP files of `input` in file-name order, at most `count` of
/// them; centre-crops each to `crop` px (rounded down to a multiple of the scale; smaller
/// images keep their largest multiple-of-scale size); degrades the `i`-th file with
/// `ChaCha8Rng::seed_from_u64(seed ^ i)`; and writes `NAME_hr.png`, `NAME_lr.png` and
/// `NAME_params.toml` into `output` (created if needed). Images smaller than 4 x scale
/// after cropping are skipped with a warning. Returns the number of pairs written.
pub fn degrade_folder(
    input: &Path,
    output: &Path,
    cfg: &DegradationConfig,
    seed: u64,
    crop: usize,
    count: usize,
) -> anyhow::Result<usize> {
    cfg.validate()?;
    let min = 4 * cfg.scale;
    if crop < min {
        bail!(
            "crop {crop} is smaller than the minimum HR size {min} (4 x scale {})",
            cfg.scale
        );
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("cannot list {}", input.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", input.display()))?;
    files.retain(|p| is_image_file(p));
    files.sort();
    files.truncate(count);

    let mut stems = HashSet::new();
    for path in &files {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !stems.insert(stem.clone()) {
            bail!("two input images share the name {stem:?}; their outputs would collide");
        }
    }
    std::fs::create_dir_all(output)
        .with_context(|| format!("cannot create {}", output.display()))?;

    let mut written = 0;
    for (index, path) in files.iter().enumerate() {
        let img =
            image::open(path).with_context(|| format!("cannot read image {}", path.display()))?;
        let hr = centre_crop(&Planar::from_rgb8(&img.to_rgb8()), crop, cfg.scale);
        if let Err(e) = check_gt_size(hr.width, hr.height, cfg.scale) {
            tracing::warn!("skipping {}: {e}", path.display());
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index as u64);
        let params = sample(cfg, hr.width, hr.height, &mut rng);
        let lr =
            apply(&params, &hr).with_context(|| format!("cannot degrade {}", path.display()))?;

        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hr_path = output.join(format!("{stem}_hr.png"));
        let lr_path = output.join(format!("{stem}_lr.png"));
        let params_path = output.join(format!("{stem}_params.toml"));
        hr.to_rgb8()
            .save(&hr_path)
            .with_context(|| format!("cannot write {}", hr_path.display()))?;
        lr.to_rgb8()
            .save(&lr_path)
            .with_context(|| format!("cannot write {}", lr_path.display()))?;
        let text =
            toml::to_string(&params).context("cannot serialise the degradation parameters")?;
        std::fs::write(&params_path, text)
            .with_context(|| format!("cannot write {}", params_path.display()))?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textured(w: usize, h: usize) -> Planar {
        let mut p = Planar::zeros(w, h);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let v =
                        0.5 + 0.4 * ((x as f32 * 0.9 + c as f32).sin() * (y as f32 * 0.6).cos());
                    *p.get_mut(c, x, y) = v;
                }
            }
        }
        p
    }

    fn params(cfg: &DegradationConfig, seed: u64, w: usize, h: usize) -> DegradationParams {
        sample(cfg, w, h, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    #[test]
    fn output_is_lq_sized_in_range_and_8_bit() {
        let cfg = DegradationConfig::default();
        let gt = textured(64, 48);
        for seed in 0..8 {
            let lq = apply(&params(&cfg, seed, 64, 48), &gt).unwrap();
            assert_eq!((lq.width, lq.height), (16, 12), "seed {seed}");
            for &v in &lq.data {
                assert!((0.0..=1.0).contains(&v));
                assert_eq!(
                    v,
                    (v * 255.0).round() / 255.0,
                    "seed {seed}: {v} is not 8-bit"
                );
            }
        }
    }

    #[test]
    fn every_branch_runs_on_small_images() {
        // Enough seeds to visit every kernel family, noise kind and final order.
        let cfg = DegradationConfig::default();
        let gt = textured(32, 32);
        let (mut families, mut orders, mut noises) =
            (HashSet::new(), HashSet::new(), HashSet::new());
        for seed in 0..150 {
            let p = params(&cfg, seed, 32, 32);
            families.insert(format!("{:?}", p.first.kernel.family));
            orders.insert(format!("{:?}", p.final_step.order));
            noises.insert(format!("{:?}{}", p.first.noise.kind, p.first.noise.gray));
            let lq = apply(&p, &gt).unwrap();
            assert_eq!((lq.width, lq.height), (8, 8));
        }
        assert_eq!(families.len(), 7, "{families:?}");
        assert_eq!(orders.len(), 2);
        assert_eq!(noises.len(), 4);
    }

    #[test]
    fn same_seed_same_params_and_output() {
        let cfg = DegradationConfig::default();
        let gt = textured(48, 48);
        for seed in [1, 7, 42] {
            let a = params(&cfg, seed, 48, 48);
            let b = params(&cfg, seed, 48, 48);
            assert_eq!(a, b);
            let (x, y) = (apply(&a, &gt).unwrap(), apply(&b, &gt).unwrap());
            assert_eq!(
                x.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                y.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn different_seeds_differ() {
        let cfg = DegradationConfig::default();
        let gt = textured(48, 48);
        let (a, b) = (params(&cfg, 1, 48, 48), params(&cfg, 2, 48, 48));
        assert_ne!(a, b);
        assert_ne!(apply(&a, &gt).unwrap(), apply(&b, &gt).unwrap());
    }

    #[test]
    fn params_round_trip_through_toml() {
        let cfg = DegradationConfig::default();
        let mut saw_none = false;
        for seed in 0..20 {
            let p = params(&cfg, seed, 64, 32);
            saw_none |= p.second.kernel.is_none() || p.final_step.sinc.is_none();
            let text = toml::to_string(&p).unwrap();
            let back: DegradationParams = toml::from_str(&text).unwrap();
            assert_eq!(back, p, "{text}");
        }
        assert!(saw_none);
    }

    #[test]
    fn flat_gray_stays_flat_gray() {
        // Gaussian noise only: BasicSR's Poisson noise on a single-level image uses one
        // "value" (vals = 1), which is deliberately huge and clips asymmetrically.
        let cfg = DegradationConfig {
            gaussian_noise_prob: 1.0,
            gaussian_noise_prob2: 1.0,
            ..Default::default()
        };
        let mut gt = Planar::zeros(64, 64);
        gt.data.fill(0.5);
        for seed in 0..6 {
            let lq = apply(&params(&cfg, seed, 64, 64), &gt).unwrap();
            for c in 0..3 {
                let mean = lq.plane(c).iter().sum::<f32>() / lq.plane(c).len() as f32;
                assert!(
                    (mean - 0.5).abs() < 0.05,
                    "seed {seed} channel {c}: mean {mean}"
                );
            }
        }
    }

    #[test]
    fn tiny_resize_factors_never_give_empty_images() {
        let cfg = DegradationConfig {
            resize_prob: ResizeProbs {
                up: 0.0,
                down: 1.0,
                keep: 0.0,
            },
            resize_down: [0.01, 0.01],
            resize_prob2: ResizeProbs {
                up: 0.0,
                down: 1.0,
                keep: 0.0,
            },
            resize_down2: [0.01, 0.01],
            ..Default::default()
        };
        cfg.validate().unwrap();
        let lq = apply(&params(&cfg, 3, 16, 16), &textured(16, 16)).unwrap();
        assert_eq!((lq.width, lq.height), (4, 4));
    }

    #[test]
    fn bad_sizes_are_errors() {
        let cfg = DegradationConfig::default();
        let err = apply(&params(&cfg, 0, 62, 64), &textured(62, 64)).unwrap_err();
        assert!(matches!(err, DegradeError::NotDivisible { .. }), "{err}");
        let err = apply(&params(&cfg, 0, 12, 12), &textured(12, 12)).unwrap_err();
        assert!(
            matches!(err, DegradeError::TooSmall { min: 16, .. }),
            "{err}"
        );
        let err = apply(&params(&cfg, 0, 32, 32), &textured(32, 36)).unwrap_err();
        assert!(matches!(err, DegradeError::SizeMismatch { .. }), "{err}");
    }

    #[test]
    fn centre_crop_rounds_to_the_scale() {
        let img = textured(50, 30);
        let c = centre_crop(&img, 40, 4);
        assert_eq!((c.width, c.height), (40, 28));
        assert_eq!(c.get(0, 0, 0), img.get(0, 5, 1));
    }

    #[test]
    fn degrade_folder_writes_pairs() {
        let root = std::env::temp_dir().join(format!("gdpo-degrade-test-{}", std::process::id()));
        let (input, output) = (root.join("in"), root.join("out"));
        std::fs::create_dir_all(&input).unwrap();
        for (name, w, h) in [("a.png", 40, 36), ("b.bmp", 20, 20), ("tiny.png", 10, 30)] {
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 6) as u8, (y * 7) as u8, 90])
            });
            img.save(input.join(name)).unwrap();
        }
        std::fs::write(input.join("notes.txt"), "not an image").unwrap();
        let cfg = DegradationConfig::default();
        let n = degrade_folder(&input, &output, &cfg, 9, 32, 10).unwrap();
        assert_eq!(n, 2, "tiny.png is skipped, notes.txt ignored");
        let lr = image::open(output.join("a_lr.png")).unwrap();
        assert_eq!((lr.width(), lr.height()), (8, 8));
        let hr = image::open(output.join("b_hr.png")).unwrap();
        assert_eq!((hr.width(), hr.height()), (20, 20));
        let text = std::fs::read_to_string(output.join("a_params.toml")).unwrap();
        let p: DegradationParams = toml::from_str(&text).unwrap();
        assert_eq!(p, params(&cfg, 9, 32, 32));
        assert_eq!(degrade_folder(&input, &output, &cfg, 9, 32, 1).unwrap(), 1);

        std::fs::write(input.join("broken.png"), "not a png").unwrap();
        let err = degrade_folder(&input, &output, &cfg, 9, 32, 10).unwrap_err();
        assert!(format!("{err:#}").contains("broken.png"), "{err:#}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
