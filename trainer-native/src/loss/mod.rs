//! Weight-free training losses on image tensors in [-1, 1] (substitutes for LPIPS, whose
//! pretrained VGG weights are not available; see docs/training.md):
//! - pixel L1;
//! - multi-scale SSIM: `1 - mean_s SSIM(x_s, y_s)` over up to three 2x-downsampled scales
//!   (7x7 Gaussian window, sigma 1.5, images mapped to [0, 1]);
//! - gradient loss: L1 between Sobel derivatives, which rewards sharp, correctly placed edges.

pub mod discriminator;
pub mod gdpo;

use burn::tensor::{Tensor, TensorData, backend::Backend, module::conv2d, ops::ConvOptions};

/// Mean absolute error.
pub fn l1<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
    (a - b).abs().mean()
}

fn depthwise<B: Backend>(x: Tensor<B, 4>, taps: &[f32], k: usize) -> Tensor<B, 4> {
    let [_, c, _, _] = x.dims();
    let values: Vec<f32> = (0..c).flat_map(|_| taps.iter().copied()).collect();
    let kernel = Tensor::<B, 4>::from_data(TensorData::new(values, [c, 1, k, k]), &x.device());
    conv2d(x, kernel, None, ConvOptions::new([1, 1], [0, 0], [1, 1], c))
}

const WINDOW: usize = 7;

fn gaussian_taps() -> Vec<f32> {
    let g: Vec<f64> = (0..WINDOW)
        .map(|i| (-((i as f64 - 3.0).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
        .collect();
    let s: f64 = g.iter().sum();
    let mut taps = Vec::with_capacity(WINDOW * WINDOW);
    for a in &g {
        for b in &g {
            taps.push((a * b / (s * s)) as f32);
        }
    }
    taps
}

/// Mean SSIM of two batches in [-1, 1] (valid windows only), computed on [0, 1] as usual:
/// SSIM's luminance term degenerates for signals centred on zero.
pub fn ssim<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
    let taps = gaussian_taps();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let (a, b) = (
        a.add_scalar(1.0).mul_scalar(0.5),
        b.add_scalar(1.0).mul_scalar(0.5),
    );
    let mu_a = depthwise(a.clone(), &taps, WINDOW);
    let mu_b = depthwise(b.clone(), &taps, WINDOW);
    let aa = depthwise(a.clone() * a.clone(), &taps, WINDOW) - mu_a.clone() * mu_a.clone();
    let bb = depthwise(b.clone() * b.clone(), &taps, WINDOW) - mu_b.clone() * mu_b.clone();
    let ab = depthwise(a * b, &taps, WINDOW) - mu_a.clone() * mu_b.clone();
    let num = (mu_a.clone() * mu_b.clone()).mul_scalar(2.0).add_scalar(c1)
        * ab.mul_scalar(2.0).add_scalar(c2);
    let den = (mu_a.powi_scalar(2) + mu_b.powi_scalar(2)).add_scalar(c1) * (aa + bb).add_scalar(c2);
    (num / den).mean()
}

fn halve<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let x = x.slice([0..n, 0..c, 0..h / 2 * 2, 0..w / 2 * 2]);
    x.reshape([n, c, h / 2, 2, w / 2, 2])
        .mean_dim(5)
        .mean_dim(3)
        .reshape([n, c, h / 2, w / 2])
}

/// `1 - mean SSIM` over as many of three scales as the image size allows (at least one).
///
/// # Panics
/// When the images are smaller than the 7x7 window.
pub fn multiscale_ssim_loss<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
    let [_, _, h, w] = a.dims();
    assert!(
        h.min(w) >= WINDOW,
        "SSIM loss needs at least {WINDOW}x{WINDOW} images"
    );
    let scales = (0..3).take_while(|s| h.min(w) >> s >= WINDOW).count();
    let (mut a, mut b) = (a, b);
    let mut total = ssim(a.clone(), b.clone());
    for _ in 1..scales {
        (a, b) = (halve(a), halve(b));
        total = total + ssim(a.clone(), b.clone());
    }
    total.div_scalar(scales as f64).neg().add_scalar(1.0)
}

/// L1 distance between the Sobel derivatives (x and y) of two batches.
pub fn gradient_loss<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
    const SOBEL_X: [f32; 9] = [-1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0];
    const SOBEL_Y: [f32; 9] = [-1.0, -2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 1.0];
    let d = a - b;
    let gx = depthwise(d.clone(), &SOBEL_X, 3).abs().mean();
    let gy = depthwise(d, &SOBEL_Y, 3).abs().mean();
    (gx + gy).div_scalar(8.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::{backend::Flex, tensor::Distribution};

    type B = Flex;

    fn scalar(t: Tensor<B, 1>) -> f32 {
        t.into_scalar()
    }

    #[test]
    fn identical_images_have_zero_loss() {
        let x = Tensor::<B, 4>::random(
            [2, 3, 32, 32],
            Distribution::Uniform(-1.0, 1.0),
            &Default::default(),
        );
        assert!(scalar(multiscale_ssim_loss(x.clone(), x.clone())).abs() < 1e-5);
        assert_eq!(scalar(gradient_loss(x.clone(), x.clone())), 0.0);
        assert_eq!(scalar(l1(x.clone(), x)), 0.0);
    }

    #[test]
    fn ssim_prefers_structure_over_brightness() {
        let device = Default::default();
        let x = Tensor::<B, 4>::random([1, 1, 32, 32], Distribution::Uniform(-0.5, 0.5), &device);
        let brighter = x.clone().add_scalar(0.1);
        let noisy =
            x.clone() + Tensor::random([1, 1, 32, 32], Distribution::Uniform(-0.1, 0.1), &device);
        // Same L1 scale (0.1 vs mean 0.05) but noise destroys structure, a shift does not.
        assert!(
            scalar(multiscale_ssim_loss(x.clone(), brighter))
                < scalar(multiscale_ssim_loss(x, noisy))
        );
    }

    #[test]
    fn gradient_loss_ignores_constant_offsets_but_sees_blur() {
        let device = Default::default();
        let x = Tensor::<B, 4>::random([1, 3, 16, 16], Distribution::Uniform(-1.0, 1.0), &device);
        assert!(scalar(gradient_loss(x.clone(), x.clone().add_scalar(0.3))) < 1e-6);
        let blurred = halve(x.clone())
            .reshape([1, 3, 8, 1, 8, 1])
            .expand([1, 3, 8, 2, 8, 2])
            .reshape([1, 3, 16, 16]);
        assert!(scalar(gradient_loss(x, blurred)) > 0.05);
    }
}
