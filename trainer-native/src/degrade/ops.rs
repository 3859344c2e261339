//! The image operations of the Real-ESRGAN degradation (method.md section 3), on
//! `Planar` images: 2-D filtering with reflect padding (BasicSR's `filter2D`), resizing
//! with PyTorch `F.interpolate` semantics, Gaussian and Poisson noise (BasicSR's
//! `random_add_gaussian_noise_pt` / `random_add_poisson_noise_pt`) and a JPEG round trip.
//!
//! Everything is deterministic: randomness comes only from the `Rng` passed in.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageFormat};
use rand::Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::kernels::Kernel;
use crate::planar::Planar;

/// Interpolation mode of `resize`, named as in PyTorch's `F.interpolate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interp {
    /// Box average over the source pixels each output pixel covers (`adaptive_avg_pool2d`).
    Area,
    /// Bilinear, `align_corners = false`, no antialiasing.
    Bilinear,
    /// Bicubic convolution with `a = -0.75`, `align_corners = false`, no antialiasing.
    Bicubic,
}

/// Folds an out-of-range index back into `0..n` by mirroring without repeating the edge
/// (PyTorch's `reflect` padding), repeatedly, so that any kernel fits any image size
/// (PyTorch would refuse a pad as large as the image).
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// Per-channel 2-D correlation with reflect padding, the output the same size as the
/// input (BasicSR's `filter2D`; the kernels are symmetric under 180 degree rotation, so
/// correlation and convolution agree).
pub fn filter2d(img: &Planar, kernel: &Kernel) -> Planar {
    let (w, h, n) = (img.width, img.height, kernel.size);
    let pad = n / 2;
    let (pw, ph) = (w + 2 * pad, h + 2 * pad);
    let xs: Vec<usize> = (0..pw)
        .map(|x| reflect(x as isize - pad as isize, w))
        .collect();
    let ys: Vec<usize> = (0..ph)
        .map(|y| reflect(y as isize - pad as isize, h))
        .collect();
    let padded: Vec<Vec<f32>> = (0..3)
        .map(|c| {
            let plane = img.plane(c);
            let mut out = Vec::with_capacity(pw * ph);
            for &sy in &ys {
                out.extend(xs.iter().map(|&sx| plane[sy * w + sx]));
            }
            out
        })
        .collect();

    let mut out = Planar::zeros(w, h);
    if w == 0 || h == 0 {
        return out;
    }
    out.data.par_chunks_mut(w).enumerate().for_each(|(r, row)| {
        let (c, y) = (r / h, r % h);
        for ki in 0..n {
            let src_row = &padded[c][(y + ki) * pw..(y + ki + 1) * pw];
            for kj in 0..n {
                let wt = kernel.weights[ki * n + kj];
                for (o, &s) in row.iter_mut().zip(&src_row[kj..kj + w]) {
                    *o += wt * s;
                }
            }
        }
    });
    out
}

/// The cubic convolution kernel of PyTorch's bicubic mode.
const CUBIC_A: f64 = -0.75;

fn cubic_near(x: f64) -> f64 {
    ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
}

fn cubic_far(x: f64) -> f64 {
    ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A
}

/// For each output index along one axis, the source indices and weights.
fn axis_taps(len_in: usize, len_out: usize, mode: Interp) -> Vec<Vec<(usize, f32)>> {
    let ratio = len_in as f64 / len_out as f64;
    let last = len_in as isize - 1;
    (0..len_out)
        .map(|i| match mode {
            Interp::Area => {
                let start = i * len_in / len_out;
                let end = ((i + 1) * len_in).div_ceil(len_out);
                let wt = 1.0 / (end - start) as f32;
                (start..end).map(|s| (s, wt)).collect()
            }
            Interp::Bilinear => {
                // PyTorch clamps negative source coordinates to 0 for linear modes.
                let src = ((i as f64 + 0.5) * ratio - 0.5).max(0.0);
                let x0 = (src.floor() as usize).min(len_in - 1);
                let x1 = (x0 + 1).min(len_in - 1);
                let l = (src - x0 as f64).clamp(0.0, 1.0);
                vec![(x0, (1.0 - l) as f32), (x1, l as f32)]
            }
            Interp::Bicubic => {
                let src = (i as f64 + 0.5) * ratio - 0.5;
                let x0 = src.floor();
                let t = src - x0;
                let wts = [
                    cubic_far(t + 1.0),
                    cubic_near(t),
                    cubic_near(1.0 - t),
                    cubic_far(2.0 - t),
                ];
                (0..4)
                    .map(|k| {
                        let idx = (x0 as isize - 1 + k as isize).clamp(0, last) as usize;
                        (idx, wts[k] as f32)
                    })
                    .collect()
            }
        })
        .collect()
}

/// Resizes to exactly `new_w x new_h` (each clamped to at least 1 pixel), like PyTorch's
/// `F.interpolate(size=..., mode=...)`: separable, width first, then height.
///
/// The coordinate mapping uses the ratio of the actual sizes, as PyTorch does when given
/// a size (or a scale factor with `recompute_scale_factor=True`).
pub fn resize(img: &Planar, new_w: usize, new_h: usize, mode: Interp) -> Planar {
    let (new_w, new_h) = (new_w.max(1), new_h.max(1));
    let (w, h) = (img.width, img.height);
    if (new_w, new_h) == (w, h) || w == 0 || h == 0 {
        return if (new_w, new_h) == (w, h) {
            img.clone()
        } else {
            Planar::zeros(new_w, new_h)
        };
    }
    let xt = axis_taps(w, new_w, mode);
    let yt = axis_taps(h, new_h, mode);
    let mut out = Planar::zeros(new_w, new_h);
    for c in 0..3 {
        let plane = resize_with_taps(img.plane(c), w, h, &xt, &yt);
        out.data[c * new_w * new_h..(c + 1) * new_w * new_h].copy_from_slice(&plane);
    }
    out
}

/// [`resize`] of one `w x h` plane (e.g. a gray image).
///
/// # Panics
/// When `src.len() != w * h`.
pub fn resize_plane(
    src: &[f32],
    w: usize,
    h: usize,
    new_w: usize,
    new_h: usize,
    mode: Interp,
) -> Vec<f32> {
    assert_eq!(src.len(), w * h, "plane size");
    let (new_w, new_h) = (new_w.max(1), new_h.max(1));
    if (new_w, new_h) == (w, h) {
        return src.to_vec();
    }
    if w == 0 || h == 0 {
        return vec![0.0; new_w * new_h];
    }
    resize_with_taps(
        src,
        w,
        h,
        &axis_taps(w, new_w, mode),
        &axis_taps(h, new_h, mode),
    )
}

/// The separable resize of one plane with precomputed taps: width first, then height.
fn resize_with_taps(
    src: &[f32],
    w: usize,
    h: usize,
    xt: &[Vec<(usize, f32)>],
    yt: &[Vec<(usize, f32)>],
) -> Vec<f32> {
    let (new_w, new_h) = (xt.len(), yt.len());
    let mut wide = vec![0.0f32; new_w * h];
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        let dst = &mut wide[y * new_w..(y + 1) * new_w];
        for (o, taps) in dst.iter_mut().zip(xt) {
            *o = taps.iter().map(|&(s, wt)| wt * row[s]).sum();
        }
    }
    let mut out = vec![0.0f32; new_w * new_h];
    for (y, taps) in yt.iter().enumerate() {
        let dst = &mut out[y * new_w..(y + 1) * new_w];
        for &(s, wt) in taps {
            for (o, &v) in dst.iter_mut().zip(&wide[s * new_w..(s + 1) * new_w]) {
                *o += wt * v;
            }
        }
    }
    out
}

fn clamp01(img: &mut Planar) {
    for v in &mut img.data {
        *v = v.clamp(0.0, 1.0);
    }
}

/// Adds zero-mean Gaussian noise of standard deviation `sigma` (in [0, 1] units, i.e.
/// BasicSR's sigma / 255), then clips to [0, 1]. With `gray`, one noise plane is shared
/// by the three channels.
pub fn add_gaussian_noise(img: &mut Planar, sigma: f32, gray: bool, rng: &mut impl Rng) {
    let n = img.width * img.height;
    if gray {
        let noise: Vec<f32> = (0..n)
            .map(|_| sigma * rng.sample::<f32, _>(StandardNormal))
            .collect();
        for plane in img.data.chunks_mut(n.max(1)) {
            for (v, z) in plane.iter_mut().zip(&noise) {
                *v += z;
            }
        }
    } else {
        for v in &mut img.data {
            *v += sigma * rng.sample::<f32, _>(StandardNormal);
        }
    }
    clamp01(img);
}

/// `clamp(round(x * 255), 0, 255)`, as a level in 0..=255.
fn level(x: f32) -> u8 {
    (x.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// BasicSR's Poisson noise on values quantised to 8 bits: with `vals` the number of
/// distinct levels rounded up to a power of two, `noise = Poisson(x * vals) / vals - x`.
fn poisson_noise(levels: &[u8], rng: &mut impl Rng) -> Vec<f32> {
    let mut seen = [false; 256];
    for &l in levels {
        seen[l as usize] = true;
    }
    let unique = seen.iter().filter(|&&s| s).count().max(1);
    let vals = unique.next_power_of_two() as f64;
    // At most 256 distinct rates: build each distribution once. A zero rate has no
    // distribution (and no noise).
    let dists: Vec<Option<Poisson<f64>>> = (0..256)
        .map(|l| {
            if seen[l] && l > 0 {
                Poisson::new(l as f64 / 255.0 * vals).ok()
            } else {
                None
            }
        })
        .collect();
    levels
        .iter()
        .map(|&l| {
            let x = l as f64 / 255.0;
            match &dists[l as usize] {
                Some(dist) => (dist.sample(rng) / vals - x) as f32,
                None => 0.0,
            }
        })
        .collect()
}

/// Adds Poisson (shot) noise scaled by `scale`, then clips to [0, 1] (BasicSR's
/// `add_poisson_noise_pt`). With `gray`, the noise is computed once on the luma
/// (`0.2989 R + 0.587 G + 0.114 B`, as torchvision's `rgb_to_grayscale`) and shared by the
/// three channels.
pub fn add_poisson_noise(img: &mut Planar, scale: f32, gray: bool, rng: &mut impl Rng) {
    let n = img.width * img.height;
    if gray {
        let (r, g, b) = (img.plane(0), img.plane(1), img.plane(2));
        let luma: Vec<u8> = (0..n)
            .map(|i| level(0.2989 * r[i] + 0.587 * g[i] + 0.114 * b[i]))
            .collect();
        let noise = poisson_noise(&luma, rng);
        for plane in img.data.chunks_mut(n.max(1)) {
            for (v, z) in plane.iter_mut().zip(&noise) {
                *v += scale * z;
            }
        }
    } else {
        let levels: Vec<u8> = img.data.iter().map(|&x| level(x)).collect();
        let noise = poisson_noise(&levels, rng);
        for (v, z) in img.data.iter_mut().zip(&noise) {
            *v += scale * z;
        }
    }
    clamp01(img);
}

/// Encodes to a baseline JPEG of `quality` (clamped to 1..=100) and decodes it back:
/// the output is quantised to 8 bits and the same size as the input.
pub fn jpeg(img: &Planar, quality: u8) -> Result<Planar, image::ImageError> {
    let rgb = img.to_rgb8();
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, quality.clamp(1, 100)).encode(
        rgb.as_raw(),
        rgb.width(),
        rgb.height(),
        ExtendedColorType::Rgb8,
    )?;
    let decoded = image::load(Cursor::new(bytes), ImageFormat::Jpeg)?.to_rgb8();
    Ok(Planar::from_rgb8(&decoded))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::degrade::kernels::{bivariate_gaussian, circular_lowpass};

    #[test]
    fn one_plane_resizes_like_each_plane_of_an_image() {
        let mut img = Planar::zeros(9, 7);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = (i * 37 % 101) as f32 / 100.0;
        }
        for mode in [Interp::Area, Interp::Bilinear, Interp::Bicubic] {
            let whole = resize(&img, 20, 5, mode);
            for c in 0..3 {
                assert_eq!(
                    resize_plane(img.plane(c), 9, 7, 20, 5, mode),
                    whole.plane(c)
                );
            }
        }
    }

    const MODES: [Interp; 3] = [Interp::Area, Interp::Bilinear, Interp::Bicubic];

    fn filled(w: usize, h: usize, f: impl Fn(usize, usize, usize) -> f32) -> Planar {
        let mut p = Planar::zeros(w, h);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    *p.get_mut(c, x, y) = f(c, x, y);
                }
            }
        }
        p
    }

    fn mse(a: &Planar, b: &Planar) -> f64 {
        let sum: f64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum();
        sum / a.data.len() as f64
    }

    fn textured(w: usize, h: usize) -> Planar {
        filled(w, h, |c, x, y| {
            let v = 0.5 + 0.3 * ((x as f32 * 0.7 + c as f32).sin() * (y as f32 * 0.45).cos());
            if (x / 5 + y / 7) % 2 == 0 { v } else { 1.0 - v }
        })
    }

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        let got: Vec<usize> = (-4..8).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, [2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
        assert_eq!(reflect(-7, 1), 0);
    }

    #[test]
    fn filter2d_keeps_constants_and_blurs() {
        let flat = filled(9, 6, |c, _, _| 0.2 + 0.3 * c as f32);
        for k in [
            bivariate_gaussian(21, 2.0, 1.0, 0.3),
            circular_lowpass(7, 1.0),
        ] {
            let out = filter2d(&flat, &k);
            for (a, b) in out.data.iter().zip(&flat.data) {
                assert!((a - b).abs() < 1e-5);
            }
        }
        // An impulse spreads into the (symmetric) kernel itself.
        let mut dot = Planar::zeros(15, 15);
        *dot.get_mut(1, 7, 7) = 1.0;
        let k = bivariate_gaussian(5, 1.0, 1.0, 0.0);
        let out = filter2d(&dot, &k);
        for i in 0..5 {
            for j in 0..5 {
                assert_eq!(out.get(1, 5 + j, 5 + i), k.get(i, j));
            }
        }
        assert_eq!(out.plane(0).iter().sum::<f32>(), 0.0);
    }

    #[test]
    fn resize_constant_stays_constant_and_sizes_are_exact() {
        let flat = filled(17, 12, |c, _, _| 0.1 + 0.35 * c as f32);
        for mode in MODES {
            for (nw, nh) in [(5, 3), (17, 12), (40, 29), (1, 1), (0, 7)] {
                let out = resize(&flat, nw, nh, mode);
                assert_eq!((out.width, out.height), (nw.max(1), nh.max(1)), "{mode:?}");
                for c in 0..3 {
                    for &v in out.plane(c) {
                        assert!(
                            (v - flat.get(c, 0, 0)).abs() < 1e-6,
                            "{mode:?} {nw}x{nh}: {v}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn area_downscale_of_checker_averages() {
        let checker = filled(2, 2, |_, x, y| ((x + y) % 2) as f32);
        let out = resize(&checker, 1, 1, Interp::Area);
        assert_eq!(out.data, vec![0.5; 3]);
        let big = filled(8, 8, |_, x, y| ((x + y) % 2) as f32);
        let out = resize(&big, 4, 4, Interp::Area);
        assert!(out.data.iter().all(|&v| v == 0.5));
    }

    #[test]
    fn bilinear_upscale_of_ramp_is_a_ramp_inside() {
        let ramp = filled(8, 4, |_, x, _| x as f32 / 10.0);
        let out = resize(&ramp, 16, 8, Interp::Bilinear);
        // Away from the clamped borders, output x maps to source (x + 0.5) / 2 - 0.5.
        for y in 0..8 {
            for x in 1..15 {
                let want = ((x as f32 + 0.5) / 2.0 - 0.5) / 10.0;
                assert!((out.get(0, x, y) - want).abs() < 1e-6, "({x}, {y})");
            }
        }
    }

    #[test]
    fn bicubic_uses_pytorch_weights() {
        // a = -0.75 does not reproduce ramps (only a = -0.5 does); check the taps of an x2
        // upscale against PyTorch's (OpenCV's) fractional offset 0.25 weights instead.
        let taps = axis_taps(8, 16, Interp::Bicubic);
        let want = [
            (0, -0.10546875),
            (1, 0.87890625),
            (2, 0.26171875),
            (3, -0.03515625),
        ];
        assert_eq!(taps[3], want);
        // Offset 0.75 at the left border, out-of-range taps clamped to the first pixel.
        let want = [
            (0, -0.03515625),
            (0, 0.26171875),
            (0, 0.87890625),
            (1, -0.10546875),
        ];
        assert_eq!(taps[0], want);
    }

    #[test]
    fn jpeg_quantises_and_higher_quality_is_closer() {
        let img = textured(40, 32);
        let hi = jpeg(&img, 95).unwrap();
        let lo = jpeg(&img, 10).unwrap();
        for out in [&hi, &lo] {
            assert_eq!((out.width, out.height), (40, 32));
            for &v in &out.data {
                let l = v * 255.0;
                assert!(
                    (l - l.round()).abs() < 1e-4,
                    "{v} is not a multiple of 1/255"
                );
            }
        }
        let (e_hi, e_lo) = (mse(&img, &hi), mse(&img, &lo));
        assert!(e_hi < e_lo, "mse q95 {e_hi} !< q10 {e_lo}");
    }

    #[test]
    fn gaussian_noise_has_the_requested_std() {
        let mut img = filled(64, 64, |_, _, _| 0.5);
        let sigma = 10.0 / 255.0;
        add_gaussian_noise(&mut img, sigma, false, &mut ChaCha8Rng::seed_from_u64(3));
        let n = img.data.len() as f64;
        let mean = img.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (img
            .data
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(
            (std / sigma as f64 - 1.0).abs() < 0.1,
            "std {std} vs {sigma}"
        );
        assert!((mean - 0.5).abs() < 0.005);
        // Colour noise differs between channels.
        assert_ne!(img.plane(0), img.plane(1));
    }

    #[test]
    fn gray_noise_is_identical_across_channels() {
        let base = filled(32, 32, |_, _, _| 0.5);
        let mut g = base.clone();
        add_gaussian_noise(&mut g, 0.05, true, &mut ChaCha8Rng::seed_from_u64(4));
        assert_eq!(g.plane(0), g.plane(1));
        assert_eq!(g.plane(1), g.plane(2));
        assert_ne!(g, base);

        let mut p = base.clone();
        add_poisson_noise(&mut p, 1.0, true, &mut ChaCha8Rng::seed_from_u64(5));
        assert_eq!(p.plane(0), p.plane(2));
        assert_ne!(p, base);
    }

    #[test]
    fn poisson_noise_is_zero_mean_and_clipped() {
        let img = textured(64, 64);
        let mut noisy = img.clone();
        add_poisson_noise(&mut noisy, 0.5, false, &mut ChaCha8Rng::seed_from_u64(6));
        assert!(noisy.data.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(noisy.plane(0), img.plane(0));
        let n = img.data.len() as f64;
        let bias = noisy
            .data
            .iter()
            .zip(&img.data)
            .map(|(a, b)| (a - b) as f64)
            .sum::<f64>()
            / n;
        assert!(bias.abs() < 0.01, "bias {bias}");
    }
}
