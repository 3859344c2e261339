//! A natural-scene-statistics (NSS) naturalness measure in the manner of NIQE (Mittal, Soundararajan
//! and Bovik, 2013), fitted on this project's own training images: one half of the GDPO
//! "detail" reward, standing in for MANIQA/MUSIQ, whose pretrained weights are unavailable.
//!
//! Features: the luma's mean-subtracted contrast-normalised (MSCN) coefficients, at two scales,
//! described by a generalised Gaussian (shape, variance) and, for the products of horizontally,
//! vertically and diagonally neighbouring coefficients, an asymmetric generalised Gaussian
//! (shape, mean, left and right variance): 18 numbers per scale, 36 per patch.
//!
//! [`NssModel::fit`] gathers the features of the sharpest patches of pristine images (NIQE's
//! selection: mean local deviation above 0.75 of the image's sharpest patch) and keeps their
//! mean and covariance. [`NssModel::distance`] is the Mahalanobis-type distance between that
//! model and the features of an image's patches (lower is more natural: blur, ringing and
//! noise all move the statistics away). The reward term is the negated distance.
//!
//! Everything is deterministic f64 host code: the same image gives the same score anywhere.

use std::{path::Path, sync::OnceLock};

use anyhow::{Context, ensure};
use serde::{Deserialize, Serialize};

use crate::{planar::Planar, reward::gray_bt601};

/// Features per patch and scale.
const FEATURES_PER_SCALE: usize = 18;
/// Features per patch (two scales).
pub const FEATURES: usize = 2 * FEATURES_PER_SCALE;
/// NIQE's patch selection threshold (fraction of the sharpest patch's sharpness).
const SHARPNESS_FRACTION: f64 = 0.75;
/// Patches flatter than this mean local deviation (grey levels) carry no statistics.
const MIN_SHARPNESS: f64 = 1e-3;
/// Format tag of the saved model.
const FORMAT: &str = "gdpo-sr-nss-1";

/// The fitted multivariate Gaussian of pristine patch features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NssModel {
    pub format: String,
    /// Patch side at full resolution (the second scale uses half of it).
    pub patch: usize,
    /// Patches the model was fitted on.
    pub patches: usize,
    pub mean: Vec<f64>,
    /// Row-major `FEATURES x FEATURES`.
    pub covariance: Vec<f64>,
}

/// Grey in [0, 255] (the reward's BT.601 grey, scaled), as NIQE's input.
fn luma_255(img: &Planar) -> Vec<f64> {
    gray_bt601(img)
        .into_iter()
        .map(|v| 255.0 * f64::from(v))
        .collect()
}

/// 7x7 Gaussian window, sigma 7/6, normalised (NIQE's local statistics window).
fn gaussian_window() -> [f64; 7] {
    let sigma: f64 = 7.0 / 6.0;
    let mut w = [0.0; 7];
    for (i, v) in w.iter_mut().enumerate() {
        let d = i as f64 - 3.0;
        *v = (-d * d / (2.0 * sigma * sigma)).exp();
    }
    let sum: f64 = w.iter().sum();
    w.map(|v| v / sum)
}

/// Separable 7x7 Gaussian filter with replicated borders.
fn blur(plane: &[f64], w: usize, h: usize) -> Vec<f64> {
    let k = gaussian_window();
    let at = |i: isize, len: usize| i.clamp(0, len as isize - 1) as usize;
    let mut wide = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            wide[y * w + x] = (0..7)
                .map(|j| k[j] * plane[y * w + at(x as isize + j as isize - 3, w)])
                .sum();
        }
    }
    let mut out = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = (0..7)
                .map(|j| k[j] * wide[at(y as isize + j as isize - 3, h) * w + x])
                .sum();
        }
    }
    out
}

/// MSCN coefficients `(I - mu) / (sigma + 1)` and the local deviation `sigma`.
fn mscn(plane: &[f64], w: usize, h: usize) -> (Vec<f64>, Vec<f64>) {
    let mu = blur(plane, w, h);
    let sq: Vec<f64> = plane.iter().map(|v| v * v).collect();
    let mu_sq = blur(&sq, w, h);
    let sigma: Vec<f64> = mu_sq
        .iter()
        .zip(&mu)
        .map(|(m2, m)| (m2 - m * m).abs().sqrt())
        .collect();
    let coeffs = plane
        .iter()
        .zip(&mu)
        .zip(&sigma)
        .map(|((v, m), s)| (v - m) / (s + 1.0))
        .collect();
    (coeffs, sigma)
}

fn gamma(x: f64) -> f64 {
    libm::tgamma(x)
}

/// Shape grid 0.2..=10 in steps of 0.001 with the two moment ratios the fits invert:
/// `Γ(1/a)Γ(3/a)/Γ(2/a)^2` (GGD) and its reciprocal (AGGD).
fn shape_table() -> &'static [(f64, f64)] {
    static TABLE: OnceLock<Vec<(f64, f64)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (200..=10_000)
            .map(|i| {
                let a = f64::from(i) / 1000.0;
                (a, gamma(1.0 / a) * gamma(3.0 / a) / gamma(2.0 / a).powi(2))
            })
            .collect()
    })
}

/// The grid shape whose GGD ratio `r` (or `1 / r` with `reciprocal`, the AGGD's form) is
/// closest to `target`. `r` falls monotonically with the shape, so a binary search finds the
/// crossing and its two neighbours are compared.
fn closest_shape(target: f64, reciprocal: bool) -> f64 {
    let table = shape_table();
    let value = |r: f64| if reciprocal { 1.0 / r } else { r };
    let crossing_ratio = if reciprocal { 1.0 / target } else { target };
    let crossing = table.partition_point(|&(_, r)| r > crossing_ratio);
    let lo = crossing.saturating_sub(1);
    let hi = crossing.min(table.len() - 1);
    let miss = |i: usize| (value(table[i].1) - target).abs();
    if miss(lo) <= miss(hi) {
        table[lo].0
    } else {
        table[hi].0
    }
}

/// Generalised Gaussian fit by moment matching: `(shape, variance)`. A constant patch (all
/// zero coefficients) has no spread: the largest shape and zero variance.
fn fit_ggd(x: &[f64]) -> [f64; 2] {
    let n = x.len().max(1) as f64;
    let var = x.iter().map(|v| v * v).sum::<f64>() / n;
    let mean_abs = x.iter().map(|v| v.abs()).sum::<f64>() / n;
    if mean_abs < 1e-12 {
        return [10.0, 0.0];
    }
    let rho = var / (mean_abs * mean_abs);
    [closest_shape(rho, false), var]
}

/// Asymmetric generalised Gaussian fit (BRISQUE/NIQE): `(shape, mean, left var, right var)`.
fn fit_aggd(x: &[f64]) -> [f64; 4] {
    let side = |keep: fn(f64) -> bool| {
        let v: Vec<f64> = x.iter().copied().filter(|&v| keep(v)).collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().map(|v| v * v).sum::<f64>() / v.len() as f64
        }
    };
    let (left_var, right_var) = (side(|v| v < 0.0), side(|v| v > 0.0));
    let n = x.len().max(1) as f64;
    let mean_abs = x.iter().map(|v| v.abs()).sum::<f64>() / n;
    let mean_sq = x.iter().map(|v| v * v).sum::<f64>() / n;
    if mean_sq < 1e-12 || left_var < 1e-12 || right_var < 1e-12 {
        return [10.0, 0.0, left_var, right_var];
    }
    let g = left_var.sqrt() / right_var.sqrt();
    let r_hat = mean_abs * mean_abs / mean_sq;
    let r_norm = r_hat * (g.powi(3) + 1.0) * (g + 1.0) / (g * g + 1.0).powi(2);
    let shape = closest_shape(r_norm, true);
    let mean = (right_var.sqrt() - left_var.sqrt()) * gamma(2.0 / shape) / gamma(1.0 / shape)
        * (gamma(1.0 / shape) / gamma(3.0 / shape)).sqrt();
    [shape, mean, left_var, right_var]
}

/// The 18 features of one patch's MSCN coefficients (`w x h`).
fn patch_features(c: &[f64], w: usize, h: usize) -> [f64; FEATURES_PER_SCALE] {
    let mut out = [0.0; FEATURES_PER_SCALE];
    out[..2].copy_from_slice(&fit_ggd(c));
    // Horizontal, vertical, main- and anti-diagonal neighbour products.
    let shifts: [(usize, usize, isize); 4] = [(1, 0, 0), (0, 1, 0), (1, 1, 0), (1, 1, 1)];
    for (k, &(dx, dy, anti)) in shifts.iter().enumerate() {
        let mut products = Vec::with_capacity(w * h);
        for y in 0..h.saturating_sub(dy) {
            for x in 0..w.saturating_sub(dx) {
                let (ax, bx) = if anti == 1 { (x + dx, x) } else { (x, x + dx) };
                products.push(c[y * w + ax] * c[(y + dy) * w + bx]);
            }
        }
        out[2 + 4 * k..6 + 4 * k].copy_from_slice(&fit_aggd(&products));
    }
    out
}

/// 2x2 box downscale (the second scale).
fn half(plane: &[f64], w: usize, h: usize) -> (Vec<f64>, usize, usize) {
    let (hw, hh) = (w / 2, h / 2);
    let mut out = vec![0.0; hw * hh];
    for y in 0..hh {
        for x in 0..hw {
            out[y * hw + x] = 0.25
                * (plane[2 * y * w + 2 * x]
                    + plane[2 * y * w + 2 * x + 1]
                    + plane[(2 * y + 1) * w + 2 * x]
                    + plane[(2 * y + 1) * w + 2 * x + 1]);
        }
    }
    (out, hw, hh)
}

fn crop(plane: &[f64], w: usize, x0: usize, y0: usize, side: usize) -> Vec<f64> {
    (y0..y0 + side)
        .flat_map(|y| plane[y * w + x0..y * w + x0 + side].iter().copied())
        .collect()
}

/// Features of every full `patch x patch` tile of an image, with each tile's sharpness (mean
/// local deviation at full scale).
fn image_features(img: &Planar, patch: usize) -> Vec<([f64; FEATURES], f64)> {
    let (w, h) = (img.width, img.height);
    let y = luma_255(img);
    let (c1, sigma) = mscn(&y, w, h);
    let (y2, w2, h2) = half(&y, w, h);
    let (c2, _) = mscn(&y2, w2, h2);
    let p2 = patch / 2;
    let mut out = Vec::new();
    for ty in 0..h / patch {
        for tx in 0..w / patch {
            let (x0, y0) = (tx * patch, ty * patch);
            let mut f = [0.0; FEATURES];
            f[..FEATURES_PER_SCALE].copy_from_slice(&patch_features(
                &crop(&c1, w, x0, y0, patch),
                patch,
                patch,
            ));
            f[FEATURES_PER_SCALE..].copy_from_slice(&patch_features(
                &crop(&c2, w2, x0 / 2, y0 / 2, p2),
                p2,
                p2,
            ));
            let sharpness =
                crop(&sigma, w, x0, y0, patch).iter().sum::<f64>() / (patch * patch) as f64;
            out.push((f, sharpness));
        }
    }
    out
}

fn mean_and_covariance(rows: &[[f64; FEATURES]]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() as f64;
    let mut mean = vec![0.0; FEATURES];
    for r in rows {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / n;
        }
    }
    let mut cov = vec![0.0; FEATURES * FEATURES];
    if rows.len() > 1 {
        for r in rows {
            for i in 0..FEATURES {
                for j in 0..FEATURES {
                    cov[i * FEATURES + j] += (r[i] - mean[i]) * (r[j] - mean[j]) / (n - 1.0);
                }
            }
        }
    }
    (mean, cov)
}

/// Solves `A x = b` for a symmetric positive semi-definite `A` (row-major `n x n`) by a
/// Cholesky factorisation of `A + ridge I`; the ridge (relative to the mean diagonal) stands in
/// for NIQE's pseudo-inverse when `A` is singular (few patches, constant features).
fn solve_spd(a: &[f64], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let trace = (0..n).map(|i| a[i * n + i]).sum::<f64>() / n as f64;
    let ridge = 1e-6 * trace.max(1e-12);
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j] + if i == j { ridge } else { 0.0 };
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = if i == j {
                s.max(ridge).sqrt()
            } else {
                s / l[j * n + j]
            };
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i * n + k] * y[k]).sum::<f64>()) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k * n + i] * x[k]).sum::<f64>()) / l[i * n + i];
    }
    x
}

impl NssModel {
    /// Fits the model on pristine images: the sharpest patches of each (NIQE's selection).
    ///
    /// # Errors
    /// When `patch` is not an even number of at least 8 px, or the images yield fewer than two
    /// patches.
    pub fn fit(images: &[Planar], patch: usize) -> anyhow::Result<Self> {
        use rayon::prelude::*;
        ensure!(
            patch >= 8 && patch.is_multiple_of(2),
            "the NSS patch side must be even and at least 8, got {patch}"
        );
        let rows: Vec<[f64; FEATURES]> = images
            .par_iter()
            .flat_map_iter(|img| {
                let feats = image_features(img, patch);
                let sharpest = feats.iter().map(|f| f.1).fold(0.0, f64::max);
                feats
                    .into_iter()
                    .filter(move |(_, s)| *s > SHARPNESS_FRACTION * sharpest && *s > MIN_SHARPNESS)
                    .map(|(f, _)| f)
            })
            .collect();
        ensure!(
            rows.len() >= 2,
            "only {} sharp {patch}x{patch} patches found: the NSS model needs more (or larger) images",
            rows.len()
        );
        let (mean, covariance) = mean_and_covariance(&rows);
        Ok(Self {
            format: FORMAT.into(),
            patch,
            patches: rows.len(),
            mean,
            covariance,
        })
    }

    /// Distance of an image's patch statistics from the pristine model (NIQE's formula:
    /// `sqrt(d^T ((S_model + S_image) / 2)^-1 d)` with `d` the difference of the means). Lower
    /// is more natural. Images smaller than one patch are tiled with their shorter side (rounded
    /// down to even) instead; below 8 px there is nothing to measure (NaN, which group
    /// normalisation ranks last).
    pub fn distance(&self, img: &Planar) -> f64 {
        let side = self.patch.min(img.width.min(img.height) / 2 * 2);
        if side < 8 {
            return f64::NAN;
        }
        let rows: Vec<[f64; FEATURES]> = image_features(img, side)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        let (mean, cov) = mean_and_covariance(&rows);
        let d: Vec<f64> = mean.iter().zip(&self.mean).map(|(a, b)| a - b).collect();
        let pooled: Vec<f64> = cov
            .iter()
            .zip(&self.covariance)
            .map(|(a, b)| 0.5 * (a + b))
            .collect();
        let x = solve_spd(&pooled, &d);
        d.iter()
            .zip(&x)
            .map(|(a, b)| a * b)
            .sum::<f64>()
            .max(0.0)
            .sqrt()
    }

    /// Fits on the images of a folder (searched recursively; at most `limit`, in sorted
    /// order).
    ///
    /// # Errors
    /// Unreadable folders or images, and as [`Self::fit`].
    pub fn fit_folder(root: &Path, patch: usize, limit: Option<usize>) -> anyhow::Result<Self> {
        let mut paths = crate::data::list_images(root)?;
        paths.sort();
        paths.truncate(limit.unwrap_or(usize::MAX));
        let images = paths
            .iter()
            .map(|p| Ok(Planar::from_rgb8(&crate::image_io::decode_rgb8(p)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::fit(&images, patch).with_context(|| format!("fitting on {}", root.display()))
    }

    /// # Errors
    /// When the JSON is not a model of this format.
    pub fn from_json(bytes: &[u8]) -> anyhow::Result<Self> {
        let model: Self = serde_json::from_slice(bytes).context("not an NSS model file")?;
        ensure!(
            model.format == FORMAT,
            "NSS model format {:?}, expected {FORMAT:?}",
            model.format
        );
        ensure!(
            model.mean.len() == FEATURES
                && model.covariance.len() == FEATURES * FEATURES
                && model
                    .mean
                    .iter()
                    .chain(&model.covariance)
                    .all(|v| v.is_finite()),
            "NSS model has wrong dimensions or non-finite values"
        );
        Ok(model)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("serialisable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A procedural "natural" image: a sum of random oriented sinusoids with 1/f amplitudes.
    fn textured(seed: u64, w: usize, h: usize) -> Planar {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let waves: Vec<(f64, f64, f64, f64)> = (0..40)
            .map(|_| {
                let f: f64 = rng.random_range(0.02..0.6);
                let a: f64 = rng.random_range(0.0..std::f64::consts::PI);
                (
                    f * a.cos(),
                    f * a.sin(),
                    rng.random_range(0.0..6.3),
                    0.08 / (f * 10.0).max(1.0),
                )
            })
            .collect();
        let mut p = Planar::zeros(w, h);
        for y in 0..h {
            for x in 0..w {
                let v: f64 = 0.5
                    + waves
                        .iter()
                        .map(|(fx, fy, ph, amp)| amp * (fx * x as f64 + fy * y as f64 + ph).sin())
                        .sum::<f64>();
                for c in 0..3 {
                    *p.get_mut(c, x, y) = v.clamp(0.0, 1.0) as f32;
                }
            }
        }
        p
    }

    fn box_blur(img: &Planar, r: usize) -> Planar {
        let mut out = img.clone();
        for c in 0..3 {
            for y in 0..img.height {
                for x in 0..img.width {
                    let (mut s, mut n) = (0.0, 0.0);
                    for yy in y.saturating_sub(r)..(y + r + 1).min(img.height) {
                        for xx in x.saturating_sub(r)..(x + r + 1).min(img.width) {
                            s += img.get(c, xx, yy);
                            n += 1.0;
                        }
                    }
                    *out.get_mut(c, x, y) = s / n;
                }
            }
        }
        out
    }

    #[test]
    fn ggd_fit_recovers_a_gaussian_and_a_laplacian() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let normal: Vec<f64> = (0..20_000)
            .map(|_| rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng))
            .collect();
        let [shape, var] = fit_ggd(&normal);
        assert!((shape - 2.0).abs() < 0.1, "gaussian shape {shape}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        let laplace: Vec<f64> = (0..20_000)
            .map(|_| {
                let u: f64 = rng.random_range(-0.5..0.5);
                -u.signum() * (1.0 - 2.0 * u.abs()).ln()
            })
            .collect();
        let [shape, _] = fit_ggd(&laplace);
        assert!((shape - 1.0).abs() < 0.1, "laplacian shape {shape}");
        // Symmetric data: AGGD mean near zero, equal sides.
        let [_, mean, l, r] = fit_aggd(&normal);
        assert!(mean.abs() < 0.05 && (l - r).abs() < 0.1, "{mean} {l} {r}");
    }

    #[test]
    fn blur_and_noise_are_less_natural_than_held_out_pristine_images() {
        let train: Vec<Planar> = (0..6).map(|s| textured(s, 96, 96)).collect();
        let model = NssModel::fit(&train, 32).unwrap();
        assert_eq!(model.mean.len(), FEATURES);
        let held_out = textured(100, 96, 96);
        let clean = model.distance(&held_out);
        let blurred = model.distance(&box_blur(&held_out, 2));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut noisy = held_out.clone();
        noisy
            .data
            .iter_mut()
            .for_each(|v| *v = (*v + rng.random_range(-0.15..0.15)).clamp(0.0, 1.0));
        let noisy = model.distance(&noisy);
        assert!(clean.is_finite() && blurred.is_finite() && noisy.is_finite());
        assert!(blurred > clean, "blur {blurred} vs clean {clean}");
        assert!(noisy > clean, "noise {noisy} vs clean {clean}");
    }

    #[test]
    fn flat_and_tiny_images_do_not_give_nan_and_the_file_round_trips() {
        let train: Vec<Planar> = (0..3).map(|s| textured(s, 64, 64)).collect();
        let model = NssModel::fit(&train, 16).unwrap();
        let mut flat = Planar::zeros(40, 40);
        flat.data.iter_mut().for_each(|v| *v = 0.5);
        assert!(model.distance(&flat).is_finite());
        // Smaller than a patch: measured on the largest even centre square.
        assert!(model.distance(&textured(7, 12, 10)).is_finite());
        assert!(model.distance(&textured(7, 6, 6)).is_nan());
        // (serde_json parses floats to within an ulp, not always bit-exactly.)
        let back = NssModel::from_json(&model.to_json()).unwrap();
        assert_eq!((back.patch, back.patches), (model.patch, model.patches));
        let close = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-12 * x.abs().max(1.0))
        };
        assert!(close(&back.mean, &model.mean) && close(&back.covariance, &model.covariance));
        assert!(NssModel::from_json(b"{}").is_err());
        assert!(
            NssModel::fit(&[flat], 16).is_err(),
            "no sharp patch in a flat image"
        );
    }
}
