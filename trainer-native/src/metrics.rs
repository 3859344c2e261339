//! Full-reference image quality metrics with the SR literature's conventions: PSNR and SSIM on
//! the Y channel of BT.601 YCbCr (`Y = 16 + 65.481 R + 128.553 G + 24.966 B`, RGB in [0, 1],
//! Y in [16, 235], as MATLAB's `rgb2ycbcr`), with a border of `scale` pixels cropped
//! (4 for x4). SSIM uses an 11x11 Gaussian window (sigma 1.5), `C1 = (0.01 * 255)^2`,
//! `C2 = (0.03 * 255)^2`, as BasicSR's `calculate_ssim`.

use crate::planar::Planar;

/// Y channel in [16, 235] (as f64, 0..255 scale).
pub fn luma_bt601(img: &Planar) -> Vec<f64> {
    let (r, g, b) = (img.plane(0), img.plane(1), img.plane(2));
    (0..r.len())
        .map(|i| 16.0 + 65.481 * r[i] as f64 + 128.553 * g[i] as f64 + 24.966 * b[i] as f64)
        .collect()
}

fn cropped_luma(img: &Planar, border: usize) -> (Vec<f64>, usize, usize) {
    let y = luma_bt601(img);
    let (w, h) = (
        img.width.saturating_sub(2 * border),
        img.height.saturating_sub(2 * border),
    );
    let mut out = Vec::with_capacity(w * h);
    for row in border..border + h {
        out.extend_from_slice(&y[row * img.width + border..row * img.width + border + w]);
    }
    (out, w, h)
}

fn check_pair(a: &Planar, b: &Planar, border: usize) {
    assert!(
        a.width == b.width && a.height == b.height,
        "metric on images of different sizes: {}x{} vs {}x{}",
        a.width,
        a.height,
        b.width,
        b.height
    );
    assert!(
        a.width > 2 * border && a.height > 2 * border,
        "image smaller than the cropped border"
    );
}

/// PSNR of the Y channel in dB (infinite for identical images).
///
/// # Panics
/// When the sizes differ or the image is not larger than the border.
pub fn psnr_y(a: &Planar, b: &Planar, border: usize) -> f64 {
    check_pair(a, b, border);
    let (ya, _, _) = cropped_luma(a, border);
    let (yb, _, _) = cropped_luma(b, border);
    let mse = ya
        .iter()
        .zip(&yb)
        .map(|(p, q)| (p - q).powi(2))
        .sum::<f64>()
        / ya.len() as f64;
    10.0 * (255.0f64.powi(2) / mse).log10()
}

/// The 11-tap Gaussian window (sigma 1.5) of SSIM, normalised (also MS-SSIM's, `iqa`).
pub(crate) fn gaussian_window() -> [f64; 11] {
    let mut w =
        core::array::from_fn(|i| (-((i as f64 - 5.0).powi(2)) / (2.0 * 1.5f64.powi(2))).exp());
    let s: f64 = w.iter().sum();
    w.iter_mut().for_each(|v| *v /= s);
    w
}

/// Separable "valid" filtering of a `w x h` plane with the 11-tap window.
pub(crate) fn filter_valid(
    x: &[f64],
    w: usize,
    h: usize,
    k: &[f64; 11],
) -> (Vec<f64>, usize, usize) {
    let (ow, oh) = (w - 10, h - 10);
    let mut rows = vec![0.0; ow * h];
    for y in 0..h {
        for x0 in 0..ow {
            rows[y * ow + x0] = (0..11).map(|i| k[i] * x[y * w + x0 + i]).sum();
        }
    }
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        for x0 in 0..ow {
            out[y * ow + x0] = (0..11).map(|i| k[i] * rows[(y + i) * ow + x0]).sum();
        }
    }
    (out, ow, oh)
}

/// Mean SSIM of the Y channel.
///
/// # Panics
/// When the sizes differ or the cropped image is smaller than the 11x11 window.
pub fn ssim_y(a: &Planar, b: &Planar, border: usize) -> f64 {
    check_pair(a, b, border);
    let (ya, w, h) = cropped_luma(a, border);
    let (yb, _, _) = cropped_luma(b, border);
    assert!(
        w >= 11 && h >= 11,
        "SSIM needs at least 11x11 pixels after the border crop"
    );
    let k = gaussian_window();
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(u, v)| u * v).collect::<Vec<_>>();
    let (mu_a, ..) = filter_valid(&ya, w, h, &k);
    let (mu_b, ..) = filter_valid(&yb, w, h, &k);
    let (aa, ..) = filter_valid(&prod(&ya, &ya), w, h, &k);
    let (bb, ..) = filter_valid(&prod(&yb, &yb), w, h, &k);
    let (ab, ..) = filter_valid(&prod(&ya, &yb), w, h, &k);
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let n = mu_a.len();
    (0..n)
        .map(|i| {
            let (ma, mb) = (mu_a[i], mu_b[i]);
            let (va, vb, cov) = (aa[i] - ma * ma, bb[i] - mb * mb, ab[i] - ma * mb);
            ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
        })
        .sum::<f64>()
        / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize, f: impl Fn(usize, usize, usize) -> f32) -> Planar {
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

    #[test]
    fn luma_uses_bt601_studio_range() {
        let white = image(1, 1, |_, _, _| 1.0);
        let black = image(1, 1, |_, _, _| 0.0);
        assert!((luma_bt601(&white)[0] - 235.0).abs() < 1e-9);
        assert!((luma_bt601(&black)[0] - 16.0).abs() < 1e-9);
    }

    #[test]
    fn psnr_matches_the_formula() {
        let a = image(20, 20, |_, x, y| ((x + y) % 7) as f32 / 10.0);
        assert!(psnr_y(&a, &a, 4).is_infinite());
        // Shift every channel by d: Y shifts by (65.481 + 128.553 + 24.966) d = 219 d.
        let d = 0.01f32;
        let b = image(20, 20, |c, x, y| a.get(c, x, y) + d);
        let expected = 10.0 * (255.0f64.powi(2) / (219.0 * d as f64).powi(2)).log10();
        assert!((psnr_y(&a, &b, 4) - expected).abs() < 1e-3);
    }

    #[test]
    fn ssim_is_one_for_identical_and_drops_with_noise() {
        let a = image(32, 32, |c, x, y| ((x * 3 + y * 5 + c) % 11) as f32 / 11.0);
        assert!((ssim_y(&a, &a, 4) - 1.0).abs() < 1e-12);
        let noisy = image(32, 32, |c, x, y| {
            (a.get(c, x, y) + if (x * 7 + y * 3) % 2 == 0 { 0.1 } else { -0.1 }).clamp(0.0, 1.0)
        });
        let s = ssim_y(&a, &noisy, 4);
        assert!(s < 0.95 && s > 0.0, "ssim {s}");
        // A constant brightness shift barely changes structure but lowers the luminance term.
        let shifted = image(32, 32, |c, x, y| a.get(c, x, y) * 0.8);
        assert!(ssim_y(&a, &shifted, 4) < 1.0);
    }
}
