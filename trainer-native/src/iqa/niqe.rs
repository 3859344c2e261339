//! NIQE, the Natural Image Quality Evaluator (Mittal, Soundararajan and Bovik, "Making a
//! 'Completely Blind' Image Quality Analyzer", IEEE SPL 2013), with the standard pristine
//! model and the protocol of BasicSR's `calculate_niqe` (what SR papers report):
//!
//! 1. the rounded BT.601 luma of the 8-bit image ([`super::luma_rounded`]), cropped to whole
//!    96x96 blocks from the top-left corner;
//! 2. two scales, the image and MATLAB's antialiased bicubic `imresize` by 0.5;
//! 3. MSCN coefficients `(Y - mu) / (sigma + 1)` with the model's 7x7 window (a convolution with
//!    replicated borders, scipy's `mode='nearest'`), `sigma = sqrt(|E[Y^2] - mu^2|)`;
//! 4. per block (96x96, then 48x48) 18 numbers from asymmetric generalised Gaussian fits of the
//!    MSCN and of its products with the block rolled by (0,1), (1,0), (1,1), (1,-1);
//! 5. the mean (ignoring NaN per feature) and the covariance (blocks without NaN) of the 36
//!    features, then `sqrt((mu_p - mu_d)^T pinv((C_p + C_d) / 2) (mu_p - mu_d))`.
//!
//! Two deliberate, documented choices where the reference is ill-defined: MSCN differences below
//! 1e-7 grey levels are exact zeros (flat areas would otherwise take a sign from rounding
//! noise, which differs between any two implementations), and an image of one block has a
//! zero distorted covariance (MATLAB's `cov` of one observation; numpy's gives NaN).

use std::{
    io::{Cursor, Read},
    path::Path,
    sync::OnceLock,
};

use anyhow::{Context, bail, ensure};

use super::{
    NIQE_PARAMS, linalg::pinv_symmetric, luma_rounded, resample::matlab_half, shape_ratio,
};
use crate::planar::Planar;

/// Block side at full resolution (the half scale uses 48x48).
pub const NIQE_BLOCK: usize = 96;
/// Features per block: 18 per scale.
pub const NIQE_FEATURES: usize = 36;
/// Centred values (grey levels) below this are exact zeros.
const FLAT: f64 = 1e-7;
/// The 9801 shapes 0.2, 0.201, ..., 10 of the AGGD fit.
const SHAPES: usize = 9801;

/// The NIQE model: the pristine multivariate Gaussian and the MSCN window.
#[derive(Debug, Clone, PartialEq)]
pub struct Niqe {
    mu: Vec<f64>,
    /// Row-major 36x36.
    cov: Vec<f64>,
    /// Row-major 7x7.
    window: Vec<f64>,
}

/// An asymmetric generalised Gaussian fit: shape and the left and right scales.
#[derive(Debug, Clone, Copy)]
struct Aggd {
    shape: f64,
    left: f64,
    right: f64,
}

fn shape_grid() -> &'static [(f64, f64)] {
    static GRID: OnceLock<Vec<(f64, f64)>> = OnceLock::new();
    GRID.get_or_init(|| {
        (0..SHAPES)
            .map(|k| {
                let a = 0.2 + 0.001 * k as f64;
                (a, shape_ratio(a))
            })
            .collect()
    })
}

/// Moment-matched AGGD fit (the estimator of the NIQE/BRISQUE papers). A side without samples
/// has a NaN scale; the shape is then the grid's first (numpy's `argmin` of NaNs), as in the
/// reference.
fn aggd(values: impl Iterator<Item = f64>) -> Aggd {
    let (mut n, mut nl, mut nr) = (0usize, 0usize, 0usize);
    let (mut sl, mut sr, mut sa) = (0.0f64, 0.0f64, 0.0f64);
    for v in values {
        n += 1;
        if v < 0.0 {
            nl += 1;
            sl += v * v;
        } else if v > 0.0 {
            nr += 1;
            sr += v * v;
        }
        sa += v.abs();
    }
    let left = (sl / nl as f64).sqrt();
    let right = (sr / nr as f64).sqrt();
    let g = left / right;
    let r = (sa / n as f64).powi(2) / ((sl + sr) / n as f64);
    let r_norm = r * (g.powi(3) + 1.0) * (g + 1.0) / (g * g + 1.0).powi(2);
    let grid = shape_grid();
    let mut best = 0;
    let mut best_err = (grid[0].1 - r_norm).powi(2);
    for (k, &(_, ratio)) in grid.iter().enumerate().skip(1) {
        let err = (ratio - r_norm).powi(2);
        if err < best_err {
            best = k;
            best_err = err;
        }
    }
    let shape = grid[best].0;
    let k = (libm::tgamma(1.0 / shape) / libm::tgamma(3.0 / shape)).sqrt();
    Aggd {
        shape,
        left: left * k,
        right: right * k,
    }
}

/// The 18 features of one square block of MSCN coefficients.
fn block_features(block: &[f64], size: usize) -> [f64; 18] {
    let mut out = [0.0; 18];
    let a = aggd(block.iter().copied());
    out[0] = a.shape;
    out[1] = (a.left + a.right) / 2.0;
    // np.roll(block, shift): rolled[i][j] = block[i - di][j - dj] (circular).
    for (k, (di, dj)) in [(0i64, 1i64), (1, 0), (1, 1), (1, -1)]
        .into_iter()
        .enumerate()
    {
        let s = size as i64;
        let products = (0..size * size).map(|idx| {
            let (i, j) = ((idx / size) as i64, (idx % size) as i64);
            let (si, sj) = ((i - di).rem_euclid(s), (j - dj).rem_euclid(s));
            block[idx] * block[(si * s + sj) as usize]
        });
        let a = aggd(products);
        let mean = (a.right - a.left) * libm::tgamma(2.0 / a.shape) / libm::tgamma(1.0 / a.shape);
        out[2 + 4 * k..6 + 4 * k].copy_from_slice(&[a.shape, mean, a.left, a.right]);
    }
    out
}

fn read_npy(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    shape: &[u64],
) -> anyhow::Result<Vec<f64>> {
    let mut entry = zip
        .by_name(name)
        .with_context(|| format!("{name} is missing from the npz"))?;
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes)?;
    let npy = npyz::NpyFile::new(&bytes[..]).with_context(|| format!("{name}: not an npy"))?;
    ensure!(
        npy.shape() == shape,
        "{name} has shape {:?}, expected {shape:?}",
        npy.shape()
    );
    let fortran = npy.order() == npyz::Order::Fortran;
    let data = npy
        .into_vec::<f64>()
        .with_context(|| format!("{name}: not float64"))?;
    if !fortran || shape.len() != 2 {
        return Ok(data);
    }
    // Column-major on disk (numpy writes transposed arrays so): back to row-major.
    let (rows, cols) = (shape[0] as usize, shape[1] as usize);
    Ok((0..rows * cols)
        .map(|i| data[(i % cols) * rows + i / cols])
        .collect())
}

impl Niqe {
    /// Loads `niqe_pris_params.npz` from `dir` (usually [`super::DEFAULT_DIR`]), checking its
    /// SHA-256.
    ///
    /// # Errors
    /// When the file is missing (the message names the path and the expected hash), differs
    /// from the standard model or is malformed.
    pub fn load(dir: impl AsRef<Path>) -> anyhow::Result<Self> {
        let dir = dir.as_ref();
        let bytes = NIQE_PARAMS.read(dir)?;
        Self::from_npz(&bytes)
            .with_context(|| format!("reading {}", NIQE_PARAMS.path(dir).display()))
    }

    /// The model from the bytes of an npz holding `mu_pris_param` (1x36), `cov_pris_param`
    /// (36x36) and `gaussian_window` (7x7), float64 (no hash check: [`Niqe::load`] does it).
    ///
    /// # Errors
    /// When an array is missing or has another shape or type.
    pub fn from_npz(bytes: &[u8]) -> anyhow::Result<Self> {
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).context("not a zip (npz)")?;
        let n = NIQE_FEATURES as u64;
        let mu = read_npy(&mut zip, "mu_pris_param.npy", &[1, n])?;
        let cov = read_npy(&mut zip, "cov_pris_param.npy", &[n, n])?;
        let window = read_npy(&mut zip, "gaussian_window.npy", &[7, 7])?;
        ensure!(
            mu.iter().chain(&cov).chain(&window).all(|v| v.is_finite()),
            "the NIQE model holds non-finite values"
        );
        Ok(Self { mu, cov, window })
    }

    /// NIQE of an RGB image in [0, 1] (scored as its 8-bit version; lower is better,
    /// pristine photographs score about 3-7).
    ///
    /// # Errors
    /// When the image is smaller than 96x96 or has no texture (flat): no finite score exists.
    pub fn score(&self, img: &Planar) -> anyhow::Result<f64> {
        self.score_luma(&luma_rounded(img), img.width, img.height)
    }

    /// NIQE of a `w x h` luma plane in grey levels (as [`super::luma_rounded`] gives).
    ///
    /// # Errors
    /// As [`Niqe::score`].
    pub fn score_luma(&self, y: &[f64], w: usize, h: usize) -> anyhow::Result<f64> {
        let feats = self.block_features(y, w, h)?;
        let n = NIQE_FEATURES;
        let mut mu_d = vec![0.0; n];
        for (f, m) in mu_d.iter_mut().enumerate() {
            let finite: Vec<f64> = feats.iter().map(|b| b[f]).filter(|v| !v.is_nan()).collect();
            *m = finite.iter().sum::<f64>() / finite.len() as f64;
        }
        let clean: Vec<&[f64; NIQE_FEATURES]> = feats
            .iter()
            .filter(|b| b.iter().all(|v| !v.is_nan()))
            .collect();
        if clean.is_empty() || mu_d.iter().any(|v| !v.is_finite()) {
            bail!("NIQE: no 96x96 block of the {w}x{h} image has texture (a flat image?)");
        }
        let mut cov_d = vec![0.0; n * n];
        if clean.len() > 1 {
            let mean: Vec<f64> = (0..n)
                .map(|f| clean.iter().map(|b| b[f]).sum::<f64>() / clean.len() as f64)
                .collect();
            for b in &clean {
                for i in 0..n {
                    let di = b[i] - mean[i];
                    for j in 0..n {
                        cov_d[i * n + j] += di * (b[j] - mean[j]);
                    }
                }
            }
            let denom = (clean.len() - 1) as f64;
            cov_d.iter_mut().for_each(|c| *c /= denom);
        }
        let avg: Vec<f64> = self
            .cov
            .iter()
            .zip(&cov_d)
            .map(|(p, d)| (p + d) / 2.0)
            .collect();
        let inv = pinv_symmetric(&avg, n);
        let d: Vec<f64> = self.mu.iter().zip(&mu_d).map(|(p, q)| p - q).collect();
        let q: f64 = (0..n)
            .map(|i| d[i] * (0..n).map(|j| inv[i * n + j] * d[j]).sum::<f64>())
            .sum();
        let score = q.max(0.0).sqrt();
        ensure!(score.is_finite(), "NIQE of the {w}x{h} image is not finite");
        Ok(score)
    }

    /// The 36 features of every 96x96 block (row-major block order), full scale then half
    /// scale: the input of the distance (exposed for diagnostics and tests).
    ///
    /// # Errors
    /// When the plane is smaller than one block or its length does not match.
    pub fn block_features(
        &self,
        y: &[f64],
        w: usize,
        h: usize,
    ) -> anyhow::Result<Vec<[f64; NIQE_FEATURES]>> {
        ensure!(y.len() == w * h, "luma of {} values for {w}x{h}", y.len());
        ensure!(
            y.iter().all(|v| v.is_finite()),
            "NIQE: the image holds non-finite values"
        );
        let (bw, bh) = (w / NIQE_BLOCK, h / NIQE_BLOCK);
        ensure!(
            bw > 0 && bh > 0,
            "NIQE needs at least {NIQE_BLOCK}x{NIQE_BLOCK} pixels, got {w}x{h}"
        );
        let (cw, ch) = (bw * NIQE_BLOCK, bh * NIQE_BLOCK);
        let cropped: Vec<f64> = (0..ch)
            .flat_map(|r| y[r * w..r * w + cw].iter().copied())
            .collect();
        let mut out = vec![[0.0; NIQE_FEATURES]; bw * bh];
        let (half, hw, hh) = matlab_half(&cropped, cw, ch);
        for (scale, (plane, pw, ph)) in [(&cropped, cw, ch), (&half, hw, hh)]
            .into_iter()
            .enumerate()
        {
            let m = self.mscn(plane, pw, ph);
            let size = NIQE_BLOCK >> scale;
            let mut block = vec![0.0; size * size];
            for by in 0..bh {
                for bx in 0..bw {
                    for r in 0..size {
                        let src = (by * size + r) * pw + bx * size;
                        block[r * size..(r + 1) * size].copy_from_slice(&m[src..src + size]);
                    }
                    let f = block_features(&block, size);
                    out[by * bw + bx][18 * scale..18 * (scale + 1)].copy_from_slice(&f);
                }
            }
        }
        Ok(out)
    }

    /// MSCN coefficients of a `w x h` plane.
    fn mscn(&self, plane: &[f64], w: usize, h: usize) -> Vec<f64> {
        // Replicated borders of 3; the window flipped (a convolution, as scipy's `convolve`).
        let pw = w + 6;
        let padded: Vec<f64> = (0..h + 6)
            .flat_map(|py| {
                let sy = (py as isize - 3).clamp(0, h as isize - 1) as usize;
                (0..pw).map(move |px| {
                    let sx = (px as isize - 3).clamp(0, w as isize - 1) as usize;
                    plane[sy * w + sx]
                })
            })
            .collect();
        let squares: Vec<f64> = padded.iter().map(|v| v * v).collect();
        let flipped: Vec<f64> = (0..49).map(|i| self.window[48 - i]).collect();
        let mut out = vec![0.0; w * h];
        for y in 0..h {
            for x in 0..w {
                let (mut mu, mut mu2) = (0.0, 0.0);
                for a in 0..7 {
                    let row = (y + a) * pw + x;
                    let k = &flipped[a * 7..a * 7 + 7];
                    for b in 0..7 {
                        mu += k[b] * padded[row + b];
                        mu2 += k[b] * squares[row + b];
                    }
                }
                let v = plane[y * w + x];
                let mut centred = v - mu;
                if centred.abs() < FLAT {
                    centred = 0.0;
                }
                out[y * w + x] = centred / ((mu2 - mu * mu).abs().sqrt() + 1.0);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic model: identity-ish covariance, a Gaussian window.
    fn toy() -> Niqe {
        let g: Vec<f64> = (0..7)
            .map(|i| (-((i as f64 - 3.0).powi(2)) / (2.0 * (7.0f64 / 6.0).powi(2))).exp())
            .collect();
        let mut window: Vec<f64> = (0..49).map(|i| g[i / 7] * g[i % 7]).collect();
        let s: f64 = window.iter().sum();
        window.iter_mut().for_each(|v| *v /= s);
        let mut cov = vec![0.0; 36 * 36];
        for i in 0..36 {
            cov[i * 36 + i] = 1.0;
        }
        Niqe {
            mu: vec![0.5; 36],
            cov,
            window,
        }
    }

    fn texture(w: usize, h: usize) -> Vec<f64> {
        let mut state = 12345u64;
        (0..w * h)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = (state >> 33) % 40;
                (100 + (i % w) / 4 + noise as usize) as f64
            })
            .collect()
    }

    #[test]
    fn gaussian_data_fits_shape_two() {
        // Box-Muller normal samples: AGGD shape near 2, equal scales near 1.
        let mut state = 7u64;
        let mut uniform = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let samples: Vec<f64> = (0..200_000)
            .map(|_| (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos())
            .collect();
        let a = aggd(samples.iter().copied());
        assert!((a.shape - 2.0).abs() < 0.05, "{a:?}");
        // For a = 2 the scale is sigma * sqrt(Γ(1/2)/Γ(3/2)) = sqrt(2) sigma.
        assert!((a.left - 2f64.sqrt()).abs() < 0.02, "{a:?}");
        assert!((a.right - 2f64.sqrt()).abs() < 0.02, "{a:?}");
    }

    #[test]
    fn one_sided_data_gives_nan_scales_and_the_first_shape() {
        let a = aggd([1.0, 2.0, 3.0].into_iter());
        assert!(a.left.is_nan());
        assert_eq!(a.shape, 0.2);
    }

    #[test]
    fn small_flat_and_non_finite_images_are_errors() {
        let m = toy();
        let err = m.score_luma(&[100.0; 95 * 200], 95, 200).unwrap_err();
        assert!(err.to_string().contains("at least 96x96"), "{err}");
        let err = m.score_luma(&[120.0; 200 * 200], 200, 200).unwrap_err();
        assert!(err.to_string().contains("flat"), "{err}");
        let mut y = texture(100, 100);
        y[5] = f64::NAN;
        assert!(m.score_luma(&y, 100, 100).is_err());
    }

    #[test]
    fn one_block_and_many_blocks_score_finitely() {
        let m = toy();
        for (w, h) in [(96, 96), (150, 100), (300, 200)] {
            let s = m.score_luma(&texture(w, h), w, h).unwrap();
            assert!(s.is_finite() && s > 0.0, "{w}x{h}: {s}");
        }
        // The crop: columns beyond the last whole block do not count.
        let (a, b) = (texture(192, 96), texture(250, 96));
        let crop: Vec<f64> = (0..96)
            .flat_map(|r| b[r * 250..r * 250 + 192].to_vec())
            .collect();
        assert_eq!(
            m.score_luma(&crop, 192, 96).unwrap(),
            m.score_luma(&b, 250, 96).unwrap()
        );
        assert!(m.score_luma(&a, 192, 96).is_ok());
    }

    #[test]
    fn the_standard_model_loads_when_present() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/iqa");
        if !NIQE_PARAMS.path(&dir).exists() {
            eprintln!("skipped: {} absent", NIQE_PARAMS.path(&dir).display());
            return;
        }
        let m = Niqe::load(&dir).unwrap();
        let sum: f64 = m.window.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "window sums to {sum}");
        assert!((m.cov[1] - m.cov[36]).abs() < 1e-12, "symmetric covariance");
    }
}
