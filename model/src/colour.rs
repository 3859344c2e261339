//! Colour correction of the SR output against `LRup` (method.md section 2, step 6).
//!
//! One-step diffusion SR can drift in colour; both fixes take the colour from the bicubic
//! upsample, which is faithful in low frequencies, and keep the detail of the SR output.

use burn::tensor::{
    Tensor, TensorData, backend::Backend, module::conv2d, ops::ConvOptions, ops::PadMode,
};
use serde::{Deserialize, Serialize};

/// Which colour fix to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColourFix {
    /// Output as decoded.
    #[default]
    None,
    /// Match each channel's mean and standard deviation to `LRup` (AdaIN).
    Adain,
    /// Replace the low-frequency part (5-level dilated blur) with `LRup`'s.
    Wavelet,
}

/// Applies `fix` to `sr` using `reference` (both `[n, c, h, w]`).
pub fn apply<B: Backend>(
    fix: ColourFix,
    sr: Tensor<B, 4>,
    reference: Tensor<B, 4>,
) -> Tensor<B, 4> {
    match fix {
        ColourFix::None => sr,
        ColourFix::Adain => adain(sr, reference),
        ColourFix::Wavelet => {
            let detail = sr.clone() - low_frequency(sr);
            detail + low_frequency(reference)
        }
    }
}

fn channel_stats<B: Backend>(x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [n, c, h, w] = x.dims();
    let flat = x.reshape([n, c, h * w]);
    let (var, mean) = flat.var_mean_bias(2);
    let std = var.add_scalar(1e-5).sqrt();
    (mean.unsqueeze_dim(3), std.unsqueeze_dim(3))
}

/// `(x - mean_x) / std_x * std_ref + mean_ref`, per image and channel.
pub fn adain<B: Backend>(x: Tensor<B, 4>, reference: Tensor<B, 4>) -> Tensor<B, 4> {
    let (mx, sx) = channel_stats(x.clone());
    let (mr, sr) = channel_stats(reference);
    (x - mx) / sx * sr + mr
}

/// How far [`low_frequency`] reaches, in pixels: 1 + 2 + 4 + 8 + 16 (the tiler widens the
/// decode steps' halo by it).
pub const LOW_FREQUENCY_REACH: usize = 31;

/// Low-pass by five passes of a 3x3 binomial blur at dilations 1, 2, 4, 8, 16 (replicated
/// borders), as in the wavelet colour fix of StableSR that the GDPO reference code uses.
pub fn low_frequency<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, c, _, _] = x.dims();
    let taps = [1.0f32, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0].map(|v| v / 16.0);
    let values: Vec<f32> = (0..c).flat_map(|_| taps).collect();
    let kernel = Tensor::<B, 4>::from_data(TensorData::new(values, [c, 1, 3, 3]), &x.device());
    let mut out = x;
    for level in 0..5 {
        let d = 1usize << level;
        let padded = out.pad([(0, 0), (0, 0), (d, d), (d, d)], PadMode::Edge);
        out = conv2d(
            padded,
            kernel.clone(),
            None,
            ConvOptions::new([1, 1], [0, 0], [d, d], c),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::{TestBackend, device, max_abs_diff};
    use burn::tensor::Distribution;

    #[test]
    fn adain_matches_reference_statistics() {
        let dev = device();
        let x =
            Tensor::<TestBackend, 4>::random([2, 3, 8, 8], Distribution::Normal(0.3, 2.0), &dev);
        let r =
            Tensor::<TestBackend, 4>::random([2, 3, 8, 8], Distribution::Normal(-0.1, 0.5), &dev);
        let fixed = adain(x, r.clone());
        let (m1, s1) = channel_stats(fixed);
        let (m2, s2) = channel_stats(r);
        assert!(max_abs_diff(m1, m2) < 1e-4);
        assert!(max_abs_diff(s1, s2) < 1e-3);
    }

    #[test]
    fn wavelet_fix_takes_low_frequencies_from_the_reference() {
        let dev = device();
        // A flat SR image with the wrong colour, and a flat reference: the fix returns the reference.
        let sr = Tensor::<TestBackend, 4>::ones([1, 3, 16, 16], &dev).mul_scalar(0.8);
        let reference = Tensor::<TestBackend, 4>::ones([1, 3, 16, 16], &dev).mul_scalar(-0.2);
        let fixed = apply(ColourFix::Wavelet, sr, reference.clone());
        assert!(max_abs_diff(fixed, reference.clone()) < 1e-5);
        // The identity when SR and reference agree.
        let x =
            Tensor::<TestBackend, 4>::random([1, 3, 16, 16], Distribution::Normal(0.0, 1.0), &dev);
        assert!(max_abs_diff(apply(ColourFix::Wavelet, x.clone(), x.clone()), x) < 1e-5);
    }

    #[test]
    fn low_pass_keeps_the_mean_of_a_tiny_image() {
        let dev = device();
        let x = Tensor::<TestBackend, 4>::ones([1, 1, 2, 3], &dev).mul_scalar(0.5);
        let y = low_frequency(x.clone());
        assert_eq!(y.dims(), [1, 1, 2, 3]);
        assert!(max_abs_diff(y, x) < 1e-6);
    }
}
