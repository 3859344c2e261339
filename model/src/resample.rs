//! Bicubic upsampling by an integer factor (method.md section 2, step 1: `LRup`).
//!
//! Keys' cubic convolution with `a = -0.5` (the MATLAB/PIL kernel used to make SR benchmark
//! data), half-pixel centres (`src = (dst + 0.5) / s - 0.5`) and replicated borders. It is
//! written as two grouped 1-D convolutions with fixed per-phase 5-tap kernels followed by an
//! interleave, so it runs on every backend (GPU included) and gives the same result everywhere,
//! instead of depending on each backend's own interpolation kernel.

use burn::tensor::{
    Tensor, TensorData, backend::Backend, module::conv2d, ops::ConvOptions, ops::PadMode,
};

/// Keys' cubic kernel with a = -0.5.
pub fn cubic_weight(distance: f64) -> f64 {
    const A: f64 = -0.5;
    let x = distance.abs();
    if x <= 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// Weights of the 5 taps at offsets -2..=2 for each of the `scale` output phases.
fn phase_taps(scale: usize) -> Vec<[f32; 5]> {
    (0..scale)
        .map(|phase| {
            let d = (phase as f64 + 0.5) / scale as f64 - 0.5;
            core::array::from_fn(|k| cubic_weight(k as f64 - 2.0 - d) as f32)
        })
        .collect()
}

/// Bicubic upsampling of one 8-bit plane on the host, with the kernel, centres and borders of
/// [`bicubic_upsample`]: for the alpha channel, which the network does not see (values are
/// rounded and clamped to 0..=255).
///
/// # Panics
/// When `plane.len() != width * height` or `scale == 0`.
pub fn bicubic_upsample_plane_u8(
    plane: &[u8],
    width: usize,
    height: usize,
    scale: usize,
) -> Vec<u8> {
    assert!(scale > 0 && plane.len() == width * height, "plane size");
    let taps = &phase_taps(scale);
    let tap = |len: usize, out: usize| {
        let (i, phase) = (out / scale, out % scale);
        (0..5).map(move |k| {
            let src = (i as isize + k as isize - 2).clamp(0, len as isize - 1) as usize;
            (src, taps[phase][k])
        })
    };
    let (ow, oh) = (width * scale, height * scale);
    let mut wide = vec![0.0f32; height * ow];
    for y in 0..height {
        for x in 0..ow {
            wide[y * ow + x] = tap(width, x)
                .map(|(sx, w)| w * f32::from(plane[y * width + sx]))
                .sum();
        }
    }
    let mut out = vec![0u8; oh * ow];
    for y in 0..oh {
        for x in 0..ow {
            let v: f32 = tap(height, y).map(|(sy, w)| w * wide[sy * ow + x]).sum();
            out[y * ow + x] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Bicubic upsampling of `[n, c, h, w]` to `[n, c, h * scale, w * scale]`.
///
/// # Panics
/// When `scale == 0` or the image is empty (the pipeline checks both first).
pub fn bicubic_upsample<B: Backend>(x: Tensor<B, 4>, scale: usize) -> Tensor<B, 4> {
    assert!(scale > 0, "bicubic_upsample: scale must be positive");
    if scale == 1 {
        return x;
    }
    let [_, c, _, _] = x.dims();
    let taps = phase_taps(scale);
    let device = x.device();
    // Grouped conv weights: channel `ci * scale + phase` applies `taps[phase]` to channel `ci`.
    let kernel = |horizontal: bool| {
        let values: Vec<f32> = (0..c)
            .flat_map(|_| taps.iter().flatten().copied())
            .collect();
        let shape = if horizontal {
            [c * scale, 1, 1, 5]
        } else {
            [c * scale, 1, 5, 1]
        };
        Tensor::<B, 4>::from_data(TensorData::new(values, shape), &device)
    };
    let options = ConvOptions::new([1, 1], [0, 0], [1, 1], c);

    // Horizontal pass: [n, c, h, w] -> [n, c * s, h, w] -> interleave phases into the width.
    let padded = x.pad([(0, 0), (0, 0), (0, 0), (2, 2)], PadMode::Edge);
    let phased = conv2d(padded, kernel(true), None, options.clone());
    let [n, _, h, w] = phased.dims();
    let wide = phased
        .reshape([n, c, scale, h, w])
        .permute([0, 1, 3, 4, 2])
        .reshape([n, c, h, w * scale]);

    // Vertical pass on the result.
    let padded = wide.pad([(0, 0), (0, 0), (2, 2), (0, 0)], PadMode::Edge);
    let phased = conv2d(padded, kernel(false), None, options);
    let [n, _, h, ws] = phased.dims();
    phased
        .reshape([n, c, scale, h, ws])
        .permute([0, 1, 3, 2, 4])
        .reshape([n, c, h * scale, ws])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::{TestBackend, device};

    /// Direct reference: for every output pixel, sum the kernel over clamped source indices.
    fn reference(img: &[f32], h: usize, w: usize, s: usize) -> Vec<f32> {
        let axis = |dst: usize, len: usize| -> Vec<(usize, f64)> {
            let src = (dst as f64 + 0.5) / s as f64 - 0.5;
            let base = src.floor() as i64;
            (base - 1..=base + 2)
                .map(|i| {
                    (
                        i.clamp(0, len as i64 - 1) as usize,
                        cubic_weight(src - i as f64),
                    )
                })
                .collect()
        };
        let mut out = vec![0.0; h * s * w * s];
        for y in 0..h * s {
            for x in 0..w * s {
                let mut acc = 0.0;
                for (iy, wy) in axis(y, h) {
                    for (ix, wx) in axis(x, w) {
                        acc += wy * wx * img[iy * w + ix] as f64;
                    }
                }
                out[y * w * s + x] = acc as f32;
            }
        }
        out
    }

    #[test]
    fn host_plane_upsampling_matches_the_reference() {
        let (h, w, s) = (5, 7, 3);
        let plane: Vec<u8> = (0..h * w).map(|i| (i * 53 % 256) as u8).collect();
        let ours = bicubic_upsample_plane_u8(&plane, w, h, s);
        let float: Vec<f32> = plane.iter().map(|&v| f32::from(v)).collect();
        let expected = reference(&float, h, w, s);
        for (a, e) in ours.iter().zip(&expected) {
            let e = e.round().clamp(0.0, 255.0);
            assert!((f32::from(*a) - e).abs() <= 1.0, "{a} vs {e}");
        }
        let opaque = bicubic_upsample_plane_u8(&[255; 6], 3, 2, 4);
        assert!(
            opaque.iter().all(|&v| v == 255),
            "constant planes stay constant"
        );
    }

    #[test]
    fn kernel_is_a_partition_of_unity() {
        for s in 1..6 {
            for taps in phase_taps(s) {
                assert!((taps.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            }
        }
        // Golden values of Keys' kernel (a = -0.5): W(0.5) = 0.5625, W(1.5) = -0.0625.
        assert!((cubic_weight(0.5) - 0.5625).abs() < 1e-12);
        assert!((cubic_weight(1.5) + 0.0625).abs() < 1e-12);
        assert_eq!(cubic_weight(1.0), 0.0);
    }

    #[test]
    fn matches_direct_reference() {
        let (h, w) = (5, 7);
        let img: Vec<f32> = (0..h * w)
            .map(|i| ((i * 37 % 11) as f32 / 5.0) - 1.0)
            .collect();
        for s in [2, 3, 4] {
            let x = Tensor::<TestBackend, 4>::from_data(
                TensorData::new(img.clone(), [1, 1, h, w]),
                &device(),
            );
            let got: Vec<f32> = bicubic_upsample(x, s).into_data().to_vec().unwrap();
            let want = reference(&img, h, w, s);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 1e-5, "scale {s}: max error {err}");
        }
    }

    #[test]
    fn preserves_constants_and_channels() {
        let dev = device();
        let x = Tensor::<TestBackend, 4>::ones([2, 3, 4, 4], &dev).mul_scalar(0.25);
        let y = bicubic_upsample(x, 4);
        assert_eq!(y.dims(), [2, 3, 16, 16]);
        let err: f32 = (y - 0.25).abs().max().into_scalar();
        assert!(err < 1e-6);
    }
}
