//! The 2-D convolution of every learned layer ([`crate::lora::LoraConv2d`]), with a choice of
//! algorithm.
//!
//! burn 0.21 runs an f32 convolution on its CUDA backend (cubecl) as a direct kernel: the
//! implicit-GEMM candidates of its autotuner need tensor-core inputs (f16, bf16), and its
//! general im2col kernel is not among the candidates. Measured on an H100 (docs/benchmarks.md,
//! "GPU"), that direct kernel does a 3x3, 256-channel convolution at 1.8 TFLOP/s while the same
//! backend's f32 matrix product reaches 33 TFLOP/s, and its backward (input and weight
//! gradients) is slower still. [`ConvAlgorithm::Im2col`] writes the convolution as tensor ops
//! every backend has (pad, strided slices, one stack, one batched matrix product), so the
//! matrix product does the arithmetic and autodiff derives the backward from the same ops.
//!
//! The algorithm is a process-wide setting, like cuDNN's algorithm flags: it belongs to the
//! backend a process runs on, not to the model (the weights and results are the same), and
//! burn offers no per-backend hook for it. The default is the backend's own convolution.

use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::{Tensor, backend::Backend, module::conv2d, ops::ConvOptions, ops::PadMode};

/// How [`conv2d_layer`] computes a convolution. Both give the same result up to f32 rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvAlgorithm {
    /// The backend's own `conv2d` (best on the CPU backend, which already runs im2col + GEMM,
    /// and the only one measured on wgpu).
    #[default]
    Native,
    /// Patches (im2col) and one batched matrix product, from generic tensor ops.
    Im2col,
}

impl ConvAlgorithm {
    /// Every algorithm.
    pub const ALL: [ConvAlgorithm; 2] = [ConvAlgorithm::Native, ConvAlgorithm::Im2col];

    /// `native` or `im2col`: the name settings and reports use.
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgorithm::Native => "native",
            ConvAlgorithm::Im2col => "im2col",
        }
    }

    /// The algorithm called `name` ([`Self::name`]), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

static ALGORITHM: AtomicU8 = AtomicU8::new(0);

/// Sets the algorithm of every later [`conv2d_layer`] call in this process.
pub fn set_conv_algorithm(algorithm: ConvAlgorithm) {
    ALGORITHM.store(algorithm as u8, Ordering::Relaxed);
}

/// The algorithm [`conv2d_layer`] uses now.
pub fn conv_algorithm() -> ConvAlgorithm {
    match ALGORITHM.load(Ordering::Relaxed) {
        0 => ConvAlgorithm::Native,
        _ => ConvAlgorithm::Im2col,
    }
}

/// A square convolution with symmetric zero padding, no dilation, no groups: the only kind
/// the model's layers use.
///
/// # Shapes
/// `x: [n, c, h, w]`, `weight: [o, c, k, k]`, `bias: [o]` ->
/// `[n, o, (h + 2 padding - k) / stride + 1, (w + 2 padding - k) / stride + 1]`
pub fn conv2d_layer<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: usize,
    padding: usize,
) -> Tensor<B, 4> {
    match conv_algorithm() {
        ConvAlgorithm::Native => conv2d(
            x,
            weight,
            bias,
            ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1),
        ),
        ConvAlgorithm::Im2col => {
            conv2d_im2col(x, weight, bias, [stride, padding], IM2COL_MAX_ELEMENTS)
        }
    }
}

/// Largest patch matrix [`conv2d_im2col`] builds at once, in f32 elements (256 MiB): the
/// patch matrix is `k k` times the input, so a large input is done in bands of output rows,
/// keeping memory within a small multiple of the activations, as the tiler assumes.
pub const IM2COL_MAX_ELEMENTS: usize = 64 << 20;

/// [`conv2d_layer`] as im2col + matrix product. The patch matrix of an `[n, c, h, w]` input
/// is `[n, c k k, oh ow]`, rows in the weight's `(c, ky, kx)` order, so the flattened weight
/// `[o, c k k]` multiplies it directly. Done in bands of output rows when the patch matrix
/// would exceed `max_elements` ([`IM2COL_MAX_ELEMENTS`] in the layers).
pub fn conv2d_im2col<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    [stride, padding]: [usize; 2],
    max_elements: usize,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let [o, c_w, kh, kw] = weight.dims();
    assert_eq!(
        c, c_w,
        "conv2d_im2col: input has {c} channels, weight expects {c_w}"
    );
    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
    assert!(
        hp >= kh && wp >= kw && stride > 0,
        "conv2d_im2col: {h}x{w} input (padding {padding}) smaller than the {kh}x{kw} kernel"
    );
    let (oh, ow) = ((hp - kh) / stride + 1, (wp - kw) / stride + 1);
    let x = if padding > 0 {
        x.pad((padding, padding, padding, padding), PadMode::Constant(0.0))
    } else {
        x
    };
    let weight = weight
        .reshape([1, o, c * kh * kw])
        .expand([n, o, c * kh * kw]);
    let row_elements = n * c * kh * kw * ow;
    let band = (max_elements / row_elements.max(1)).clamp(1, oh);
    let out = if band == oh {
        patches_times_weight(x, weight, [kh, kw], stride, [oh, ow])
    } else {
        let bands: Vec<_> = (0..oh)
            .step_by(band)
            .map(|r0| {
                let rows = band.min(oh - r0);
                // Input rows r0 s .. (r0 + rows - 1) s + kh feed output rows r0 .. r0 + rows.
                let top = r0 * stride;
                let slab =
                    x.clone()
                        .slice([0..n, 0..c, top..top + (rows - 1) * stride + kh, 0..wp]);
                patches_times_weight(slab, weight.clone(), [kh, kw], stride, [rows, ow])
            })
            .collect();
        Tensor::cat(bands, 2)
    };
    match bias {
        Some(b) => out + b.reshape([1, o, 1, 1]),
        None => out,
    }
}

/// One band of [`conv2d_im2col`]: the padded input rows `x: [n, c, (oh - 1) s + kh, wp]`,
/// the flattened weight `[n, o, c k k]`, the output `[n, o, oh, ow]`.
fn patches_times_weight<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 3>,
    [kh, kw]: [usize; 2],
    stride: usize,
    [oh, ow]: [usize; 2],
) -> Tensor<B, 4> {
    let [n, c, _, _] = x.dims();
    let o = weight.dims()[1];
    let cols = if kh == 1 && kw == 1 && stride == 1 {
        x.slice([0..n, 0..c, 0..oh, 0..ow]).reshape([n, c, oh * ow])
    } else {
        let mut patches = Vec::with_capacity(kh * kw);
        for ky in 0..kh {
            for kx in 0..kw {
                patches.push(strided_window(x.clone(), [ky, kx], [oh, ow], stride));
            }
        }
        // [n, c, k k, oh, ow] -> [n, c k k, oh ow]
        Tensor::stack::<5>(patches, 2).reshape([n, c * kh * kw, oh * ow])
    };
    weight.matmul(cols).reshape([n, o, oh, ow])
}

/// The `oh x ow` samples `x[.., ky + stride i, kx + stride j]` of a padded `[n, c, hp, wp]`
/// input, from plain slices: a stride-s window is a slice of `s * oh` rows reshaped to
/// `[oh, s]`, keeping column 0 (rows past the input are only needed up to `ky + s (oh - 1)`,
/// so the slice is padded with zeros where it would run off the end).
fn strided_window<B: Backend>(
    x: Tensor<B, 4>,
    [ky, kx]: [usize; 2],
    [oh, ow]: [usize; 2],
    stride: usize,
) -> Tensor<B, 4> {
    let [n, c, hp, wp] = x.dims();
    if stride == 1 {
        return x.slice([0..n, 0..c, ky..ky + oh, kx..kx + ow]);
    }
    let (rows, cols) = (stride * oh, stride * ow);
    let (row_end, col_end) = ((ky + rows).min(hp), (kx + cols).min(wp));
    let window = x.slice([0..n, 0..c, ky..row_end, kx..col_end]);
    let (short_rows, short_cols) = (ky + rows - row_end, kx + cols - col_end);
    let window = if short_rows + short_cols > 0 {
        window.pad((0, short_cols, 0, short_rows), PadMode::Constant(0.0))
    } else {
        window
    };
    window
        .reshape([n, c * oh, stride, ow, stride])
        .slice([0..n, 0..c * oh, 0..1, 0..ow, 0..1])
        .reshape([n, c, oh, ow])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::{TestBackend, device, max_abs_diff};
    use burn::tensor::Distribution;

    /// Every layer shape the model uses (k 1 and 3, stride 1 and 2) and odd sizes: the
    /// im2col result equals the backend's convolution, bias included.
    #[test]
    fn im2col_equals_the_native_convolution() {
        let dev = device();
        for (c, o, k, stride, h, w) in [
            (3, 5, 3, 1, 7, 9),
            (4, 6, 3, 2, 8, 8),
            (4, 6, 3, 2, 9, 7),
            (5, 3, 1, 1, 6, 5),
            (2, 4, 1, 2, 5, 6),
        ] {
            let padding = k / 2;
            let x = Tensor::<TestBackend, 4>::random(
                [2, c, h, w],
                Distribution::Normal(0.0, 1.0),
                &dev,
            );
            let weight = Tensor::<TestBackend, 4>::random(
                [o, c, k, k],
                Distribution::Normal(0.0, 0.5),
                &dev,
            );
            let bias = Tensor::<TestBackend, 1>::random([o], Distribution::Normal(0.0, 0.5), &dev);
            let native = conv2d(
                x.clone(),
                weight.clone(),
                Some(bias.clone()),
                ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1),
            );
            let ours = conv2d_im2col(
                x,
                weight,
                Some(bias),
                [stride, padding],
                IM2COL_MAX_ELEMENTS,
            );
            assert_eq!(
                ours.dims(),
                native.dims(),
                "c{c} o{o} k{k} s{stride} {h}x{w}"
            );
            let diff = max_abs_diff(ours, native);
            assert!(
                diff < 1e-5,
                "c{c} o{o} k{k} s{stride} {h}x{w}: max diff {diff}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for a in ConvAlgorithm::ALL {
            assert_eq!(ConvAlgorithm::from_name(a.name()), Some(a));
        }
        assert_eq!(ConvAlgorithm::from_name("winograd"), None);
    }

    /// An input whose patch matrix exceeds the band limit is done in bands of output rows
    /// and still equals the native convolution (stride 1 and 2, a last band shorter than the
    /// others, and a limit below one row, which bands row by row).
    #[test]
    fn banded_im2col_equals_the_native_convolution() {
        let dev = device();
        for (stride, h, w, limit) in [(1, 23, 40, 5000), (2, 23, 41, 5000), (1, 9, 12, 10)] {
            let x = Tensor::<TestBackend, 4>::random(
                [2, 8, h, w],
                Distribution::Normal(0.0, 1.0),
                &dev,
            );
            let weight = Tensor::<TestBackend, 4>::random(
                [3, 8, 3, 3],
                Distribution::Normal(0.0, 0.3),
                &dev,
            );
            let bias = Tensor::<TestBackend, 1>::random([3], Distribution::Normal(0.0, 0.3), &dev);
            let ow = (w + 2 - 3) / stride + 1;
            assert!(
                2 * 8 * 9 * ow * 2 > limit,
                "the case must need several bands"
            );
            let native = conv2d(
                x.clone(),
                weight.clone(),
                Some(bias.clone()),
                ConvOptions::new([stride; 2], [1; 2], [1, 1], 1),
            );
            let ours = conv2d_im2col(x, weight, Some(bias), [stride, 1], limit);
            assert_eq!(ours.dims(), native.dims());
            let diff = max_abs_diff(ours, native);
            assert!(diff < 1e-4, "stride {stride} {h}x{w}: max diff {diff}");
        }
    }

    /// The backward autodiff derives from the im2col ops equals the backward of the native
    /// convolution (input, weight and bias gradients).
    #[test]
    fn im2col_gradients_equal_the_native_ones() {
        type Ad = burn::backend::Autodiff<TestBackend>;
        let dev = device();
        for (k, stride) in [(3, 1), (3, 2), (1, 1)] {
            let padding = k / 2;
            let x0 = Tensor::<TestBackend, 4>::random(
                [2, 3, 6, 7],
                Distribution::Normal(0.0, 1.0),
                &dev,
            );
            let w0 = Tensor::<TestBackend, 4>::random(
                [4, 3, k, k],
                Distribution::Normal(0.0, 0.5),
                &dev,
            );
            let b0 = Tensor::<TestBackend, 1>::random([4], Distribution::Normal(0.0, 0.5), &dev);
            let grads = |im2col: bool| {
                let x = Tensor::<Ad, 4>::from_data(x0.to_data(), &dev).require_grad();
                let weight = Tensor::<Ad, 4>::from_data(w0.to_data(), &dev).require_grad();
                let bias = Tensor::<Ad, 1>::from_data(b0.to_data(), &dev).require_grad();
                let y = if im2col {
                    conv2d_im2col(
                        x.clone(),
                        weight.clone(),
                        Some(bias.clone()),
                        [stride, padding],
                        IM2COL_MAX_ELEMENTS,
                    )
                } else {
                    conv2d(
                        x.clone(),
                        weight.clone(),
                        Some(bias.clone()),
                        ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1),
                    )
                };
                // A loss whose gradient differs per output element.
                let g = (y.clone() * y).sum().backward();
                (
                    x.grad(&g).unwrap(),
                    weight.grad(&g).unwrap(),
                    bias.grad(&g).unwrap(),
                )
            };
            let (a, b) = (grads(true), grads(false));
            let scale = b.1.clone().abs().max().into_scalar().max(1.0);
            assert!(
                max_abs_diff(a.0, b.0) / scale < 1e-5,
                "input grad, k{k} s{stride}"
            );
            assert!(
                max_abs_diff(a.1, b.1) / scale < 1e-5,
                "weight grad, k{k} s{stride}"
            );
            assert!(
                max_abs_diff(a.2, b.2) / scale < 1e-5,
                "bias grad, k{k} s{stride}"
            );
        }
    }
}
