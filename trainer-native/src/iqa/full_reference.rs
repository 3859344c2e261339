//! Weight-free full-reference metrics beside PSNR/SSIM ([`crate::metrics`]), each from its
//! paper's definition and reference code, on the BT.601 luma in [16, 235] grey levels
//! ([`crate::metrics::luma_bt601`], the conventions of `metrics.rs`):
//!
//! - [`ms_ssim`]: Wang, Simoncelli and Bovik, "Multi-scale structural similarity for image
//!   quality assessment" (Asilomar 2003): 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363,
//!   0.1333), 11x11 Gaussian (sigma 1.5) 'valid' windows, `C1 = (0.01 L)^2`, `C2 = (0.03 L)^2`,
//!   L = 255; between scales a 2x2 mean (symmetric border) and decimation by 2. Higher is
//!   better, 1 for identical images.
//! - [`gmsd`]: Xue, Zhang, Mou and Bovik, "Gradient Magnitude Similarity Deviation" (IEEE TIP
//!   2014): 2x2 mean and decimation by 2, Prewitt gradients (zero border, MATLAB's `conv2
//!   'same'`), `GMS = (2 m1 m2 + T) / (m1^2 + m2^2 + T)` with T = 170, the score is the
//!   standard deviation of the GMS map. Lower is better, 0 for identical images.
//! - [`haarpsi`]: Reisenhofer, Bosse, Kutyniok and Wiegand, "A Haar wavelet-based perceptual
//!   similarity index" (Signal Processing: Image Communication 2018), grey-scale version:
//!   2x2 mean and decimation by 2, Haar filters of 2^j x 2^j (j = 1, 2, 3) both orientations,
//!   local similarity `(2 a b + C) / (a^2 + b^2 + C)` of the first two scales through the
//!   logistic `l(x) = 1 / (1 + exp(-alpha x))`, weighted by the third scale's larger magnitude,
//!   `C = 30`, `alpha = 4.2`, then `(l^-1(weighted mean))^2`. Higher is better, 1 for identical.

use anyhow::ensure;

use crate::{
    metrics::{filter_valid, gaussian_window, luma_bt601},
    planar::Planar,
};

/// A plane of f64 with its size.
struct Plane {
    data: Vec<f64>,
    w: usize,
    h: usize,
}

impl Plane {
    fn luma(img: &Planar) -> Self {
        Self {
            data: luma_bt601(img),
            w: img.width,
            h: img.height,
        }
    }

    fn map2(&self, other: &Plane, f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
        self.data
            .iter()
            .zip(&other.data)
            .map(|(&a, &b)| f(a, b))
            .collect()
    }
}

fn check_pair(a: &Planar, b: &Planar, min: usize, what: &str) -> anyhow::Result<()> {
    ensure!(
        a.width == b.width && a.height == b.height,
        "{what} of images of different sizes: {}x{} vs {}x{}",
        a.width,
        a.height,
        b.width,
        b.height
    );
    ensure!(
        a.width >= min && a.height >= min,
        "{what} needs at least {min}x{min} pixels, got {}x{}",
        a.width,
        a.height
    );
    let finite = |p: &Planar| p.data.iter().all(|v| v.is_finite());
    ensure!(
        finite(a) && finite(b),
        "{what}: the images hold non-finite values"
    );
    Ok(())
}

/// MATLAB's `conv2(x, k, 'same')` along one axis (zero outside): `out[i] = sum_m k[m]
/// x[i + floor(K/2) - m]`. `horizontal` filters along rows.
fn conv_same(p: &Plane, k: &[f64], horizontal: bool) -> Plane {
    let (w, h) = (p.w, p.h);
    let half = (k.len() / 2) as isize;
    let mut out = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            for (m, &km) in k.iter().enumerate() {
                let off = half - m as isize;
                let (sx, sy) = if horizontal {
                    (x as isize + off, y as isize)
                } else {
                    (x as isize, y as isize + off)
                };
                if (0..w as isize).contains(&sx) && (0..h as isize).contains(&sy) {
                    s += km * p.data[sy as usize * w + sx as usize];
                }
            }
            out[y * w + x] = s;
        }
    }
    Plane { data: out, w, h }
}

/// The 2x2 mean then every other sample from the first (the papers' "average and downsample
/// by 2"). `symmetric`: MATLAB's `imfilter(_, 'symmetric')` border (MS-SSIM); otherwise
/// `conv2 'same'`'s zeros (GMSD, HaarPSI).
fn mean2_decimate(p: &Plane, symmetric: bool) -> Plane {
    let (w, h) = (p.w, p.h);
    let at = |x: usize, y: usize| -> f64 {
        if x < w && y < h {
            p.data[y * w + x]
        } else if symmetric {
            p.data[y.min(h - 1) * w + x.min(w - 1)]
        } else {
            0.0
        }
    };
    let (ow, oh) = (w.div_ceil(2), h.div_ceil(2));
    let mut data = Vec::with_capacity(ow * oh);
    for y in (0..h).step_by(2) {
        for x in (0..w).step_by(2) {
            data.push((at(x, y) + at(x + 1, y) + at(x, y + 1) + at(x + 1, y + 1)) / 4.0);
        }
    }
    Plane { data, w: ow, h: oh }
}

/// Mean SSIM and mean contrast-structure term of one scale.
fn ssim_and_cs(a: &Plane, b: &Plane) -> (f64, f64) {
    let k = gaussian_window();
    let (w, h) = (a.w, a.h);
    let mu_a = filter_valid(&a.data, w, h, &k).0;
    let mu_b = filter_valid(&b.data, w, h, &k).0;
    let aa = filter_valid(&a.map2(a, |u, v| u * v), w, h, &k).0;
    let bb = filter_valid(&b.map2(b, |u, v| u * v), w, h, &k).0;
    let ab = filter_valid(&a.map2(b, |u, v| u * v), w, h, &k).0;
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let n = mu_a.len() as f64;
    let (mut ssim, mut cs) = (0.0, 0.0);
    for i in 0..mu_a.len() {
        let (ma, mb) = (mu_a[i], mu_b[i]);
        let (va, vb, cov) = (aa[i] - ma * ma, bb[i] - mb * mb, ab[i] - ma * mb);
        let c = (2.0 * cov + c2) / (va + vb + c2);
        cs += c;
        ssim += c * (2.0 * ma * mb + c1) / (ma * ma + mb * mb + c1);
    }
    (ssim / n, cs / n)
}

/// MS-SSIM weights of the five scales (Wang et al. 2003).
pub const MS_SSIM_WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];

/// MS-SSIM of the luma of two images of the same size, at least 176x176 (11 px at the
/// coarsest scale). Per-scale terms below zero (anti-correlated structure) count as 0, so the
/// product is defined.
///
/// # Errors
/// When the sizes differ, the images are too small or hold non-finite values.
pub fn ms_ssim(a: &Planar, b: &Planar) -> anyhow::Result<f64> {
    check_pair(a, b, 176, "MS-SSIM")?;
    let (mut pa, mut pb) = (Plane::luma(a), Plane::luma(b));
    let mut score = 1.0;
    for (level, &weight) in MS_SSIM_WEIGHTS.iter().enumerate() {
        let (ssim, cs) = ssim_and_cs(&pa, &pb);
        if level + 1 == MS_SSIM_WEIGHTS.len() {
            score *= ssim.max(0.0).powf(weight);
        } else {
            score *= cs.max(0.0).powf(weight);
            pa = mean2_decimate(&pa, true);
            pb = mean2_decimate(&pb, true);
        }
    }
    Ok(score)
}

fn gradient_magnitude(p: &Plane) -> Vec<f64> {
    // Prewitt: [1 0 -1] along the axis, [1 1 1] / 3 across it.
    let (d, s) = ([1.0, 0.0, -1.0], [1.0 / 3.0; 3]);
    let gx = conv_same(&conv_same(p, &d, true), &s, false);
    let gy = conv_same(&conv_same(p, &s, true), &d, false);
    gx.data
        .iter()
        .zip(&gy.data)
        .map(|(x, y)| (x * x + y * y).sqrt())
        .collect()
}

/// GMSD of the luma of two images of the same size (at least 4x4). Lower is better.
///
/// # Errors
/// When the sizes differ, the images are too small or hold non-finite values.
pub fn gmsd(reference: &Planar, distorted: &Planar) -> anyhow::Result<f64> {
    check_pair(reference, distorted, 4, "GMSD")?;
    const T: f64 = 170.0;
    let r = mean2_decimate(&Plane::luma(reference), false);
    let d = mean2_decimate(&Plane::luma(distorted), false);
    let (mr, md) = (gradient_magnitude(&r), gradient_magnitude(&d));
    let gms: Vec<f64> = mr
        .iter()
        .zip(&md)
        .map(|(a, b)| (2.0 * a * b + T) / (a * a + b * b + T))
        .collect();
    let n = gms.len() as f64;
    let mean = gms.iter().sum::<f64>() / n;
    // MATLAB's std2: normalised by n - 1.
    let var = gms.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Ok(var.sqrt())
}

/// The Haar coefficients of scale `j` (filters of `2^j x 2^j`, entries `±2^-j`, the top (or
/// left) half negative) in both orientations: (across rows, across columns).
fn haar(p: &Plane, j: u32) -> (Vec<f64>, Vec<f64>) {
    let n = 1usize << j;
    let amp = 0.5f64.powi(j as i32);
    let signed: Vec<f64> = (0..n).map(|i| if i < n / 2 { -amp } else { amp }).collect();
    let ones = vec![1.0; n];
    // conv2(img, H): H[m][k] = signed[m] (rows) * 1 (columns), and its transpose.
    let vertical = conv_same(&conv_same(p, &ones, true), &signed, false);
    let horizontal = conv_same(&conv_same(p, &signed, true), &ones, false);
    (vertical.data, horizontal.data)
}

fn logistic(x: f64, alpha: f64) -> f64 {
    1.0 / (1.0 + (-alpha * x).exp())
}

/// HaarPSI of two images of the same size (at least 16x16), grey-scale version on the luma.
/// Higher is better.
///
/// # Errors
/// When the sizes differ, the images are too small or hold non-finite values.
pub fn haarpsi(reference: &Planar, distorted: &Planar) -> anyhow::Result<f64> {
    check_pair(reference, distorted, 16, "HaarPSI")?;
    const C: f64 = 30.0;
    const ALPHA: f64 = 4.2;
    let r = mean2_decimate(&Plane::luma(reference), false);
    let d = mean2_decimate(&Plane::luma(distorted), false);
    let (cr, cd): (Vec<_>, Vec<_>) = (1..=3).map(|j| (haar(&r, j), haar(&d, j))).unzip();
    let (mut num, mut den) = (0.0, 0.0);
    for orientation in 0..2 {
        let pick = |c: &(Vec<f64>, Vec<f64>)| {
            if orientation == 0 {
                c.0.clone()
            } else {
                c.1.clone()
            }
        };
        let (r1, r2, r3) = (pick(&cr[0]), pick(&cr[1]), pick(&cr[2]));
        let (d1, d2, d3) = (pick(&cd[0]), pick(&cd[1]), pick(&cd[2]));
        for i in 0..r1.len() {
            let sim = |a: f64, b: f64| (2.0 * a.abs() * b.abs() + C) / (a * a + b * b + C);
            let local = logistic((sim(r1[i], d1[i]) + sim(r2[i], d2[i])) / 2.0, ALPHA);
            let weight = r3[i].abs().max(d3[i].abs());
            num += local * weight;
            den += weight;
        }
    }
    ensure!(
        den > 0.0,
        "HaarPSI: both images are flat (no structure to compare)"
    );
    let mean = num / den;
    let inverse = (mean / (1.0 - mean)).ln() / ALPHA;
    Ok(inverse * inverse)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic textured RGB image (gradients, rings, a checker and hashed noise).
    fn natural(w: usize, h: usize) -> Planar {
        let mut p = Planar::zeros(w, h);
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                let ring = (((fx - 0.4).powi(2) + (fy - 0.6).powi(2)).sqrt() * 40.0).sin();
                let checker = if (x / 7 + y / 5) % 2 == 0 { 0.1 } else { -0.1 };
                let hash = ((x * 73_856_093) ^ (y * 19_349_663)) % 1000;
                let noise = hash as f32 / 1000.0 * 0.1 - 0.05;
                for c in 0..3 {
                    let v = 0.45 + 0.2 * ring + checker + noise + 0.1 * (c as f32) * fx;
                    *p.get_mut(c, x, y) = v.clamp(0.0, 1.0);
                }
            }
        }
        p
    }

    fn blur(img: &Planar, radius: usize) -> Planar {
        let mut out = img.clone();
        for c in 0..3 {
            for y in 0..img.height {
                for x in 0..img.width {
                    let (mut s, mut n) = (0.0, 0.0);
                    for yy in y.saturating_sub(radius)..(y + radius + 1).min(img.height) {
                        for xx in x.saturating_sub(radius)..(x + radius + 1).min(img.width) {
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

    fn noisy(img: &Planar, amplitude: f32) -> Planar {
        let mut out = img.clone();
        let mut state = 99u64;
        for v in &mut out.data {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            *v = (*v + amplitude * u).clamp(0.0, 1.0);
        }
        out
    }

    #[test]
    fn identical_images_score_perfectly() {
        let a = natural(192, 180);
        assert!((ms_ssim(&a, &a).unwrap() - 1.0).abs() < 1e-12);
        assert!(gmsd(&a, &a).unwrap().abs() < 1e-12);
        assert!((haarpsi(&a, &a).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn scores_degrade_monotonically_with_blur_and_noise() {
        let a = natural(192, 192);
        let blurred: Vec<Planar> = [1, 2, 4].iter().map(|&r| blur(&a, r)).collect();
        let noised: Vec<Planar> = [0.05, 0.15, 0.4].iter().map(|&s| noisy(&a, s)).collect();
        for series in [&blurred, &noised] {
            let ms: Vec<f64> = series.iter().map(|d| ms_ssim(&a, d).unwrap()).collect();
            let gm: Vec<f64> = series.iter().map(|d| gmsd(&a, d).unwrap()).collect();
            let hp: Vec<f64> = series.iter().map(|d| haarpsi(&a, d).unwrap()).collect();
            assert!(ms[0] < 1.0 && ms.windows(2).all(|p| p[1] < p[0]), "{ms:?}");
            assert!(gm[0] > 0.0 && gm.windows(2).all(|p| p[1] > p[0]), "{gm:?}");
            assert!(hp[0] < 1.0 && hp.windows(2).all(|p| p[1] < p[0]), "{hp:?}");
            assert!(hp.iter().chain(&ms).all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let a = natural(192, 192);
        let b = natural(190, 192);
        assert!(ms_ssim(&a, &b).is_err());
        assert!(gmsd(&a, &b).is_err());
        let small = natural(100, 100);
        assert!(
            ms_ssim(&small, &small)
                .unwrap_err()
                .to_string()
                .contains("176x176")
        );
        assert!(haarpsi(&natural(8, 8), &natural(8, 8)).is_err());
        // Flat images still have structure at the zero-padded borders of the reference
        // code's `conv2 'same'`: identical ones score 1, not an error.
        let flat = Planar::zeros(32, 32);
        assert!((haarpsi(&flat, &flat).unwrap() - 1.0).abs() < 1e-12);
        // Flat but different: GMSD and MS-SSIM stay finite.
        let mut grey = Planar::zeros(32, 32);
        grey.data.iter_mut().for_each(|v| *v = 0.5);
        assert!(gmsd(&flat, &grey).unwrap().is_finite());
        let mut nan = a.clone();
        nan.data[7] = f32::NAN;
        assert!(gmsd(&a, &nan).is_err());
    }

    #[test]
    fn conv_same_matches_matlab_offsets() {
        // conv2([1 2 3 4], [1 1] / 2, 'same') = [1.5 2.5 3.5 2].
        let p = Plane {
            data: vec![1.0, 2.0, 3.0, 4.0],
            w: 4,
            h: 1,
        };
        assert_eq!(
            conv_same(&p, &[0.5, 0.5], true).data,
            vec![1.5, 2.5, 3.5, 2.0]
        );
        // Three taps are centred: conv2([1 2 3 4], [1 0 -1], 'same') = [2 2 2 -3].
        assert_eq!(
            conv_same(&p, &[1.0, 0.0, -1.0], true).data,
            vec![2.0, 2.0, 2.0, -3.0]
        );
    }
}
