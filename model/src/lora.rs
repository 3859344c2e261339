//! Convolution and linear layers that can carry a LoRA adapter (method.md section 4).
//!
//! A LoRA adapter adds `scale * up(down(x))` to a frozen base layer, with `scale = alpha / rank`.
//! For a convolution, `down` is a `rank`-channel convolution with the base kernel size, stride
//! and padding, and `up` a 1x1 convolution; for a linear layer both are matrices. `up` starts at
//! zero, so a freshly attached adapter leaves the layer's output unchanged, and the adapter can
//! be merged into the base weights (`W + scale * up . down`) for inference at no extra cost.
//!
//! Parameter names follow the PEFT convention: `weight`, `bias`, `lora_down`, `lora_up`.

use burn::{
    config::Config,
    module::{Module, Param},
    nn::{Initializer, LinearConfig, PaddingConfig2d, conv::Conv2dConfig},
    tensor::{Distribution, Tensor, backend::Backend, module::linear},
};

use crate::conv::conv2d_layer;

/// Rank and strength of LoRA adapters.
#[derive(Config, Debug, PartialEq)]
pub struct LoraConfig {
    /// Inner dimension of the low-rank update.
    #[config(default = 4)]
    pub rank: usize,
    /// The update is scaled by `alpha / rank`.
    #[config(default = 4.0)]
    pub alpha: f64,
}

impl LoraConfig {
    fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// Layers (and networks of them) that can attach and merge LoRA adapters.
pub trait LoraTarget<B: Backend>: Sized {
    /// Attach fresh adapters (`up = 0`) to every LoRA-capable layer; existing adapters are replaced.
    fn attach_lora(self, config: &LoraConfig, device: &B::Device) -> Self;
    /// Fold every adapter into its base weights and drop it.
    fn merge_lora(self) -> Self;
}

/// The low-rank pair of one layer.
#[derive(Module, Debug)]
pub struct LoraPair<B: Backend, const D: usize> {
    /// Conv: `[rank, in, kh, kw]`; linear: `[in, rank]`.
    pub lora_down: Param<Tensor<B, D>>,
    /// Conv: `[out, rank, 1, 1]`; linear: `[rank, out]`. Zero-initialised.
    pub lora_up: Param<Tensor<B, D>>,
    /// `alpha / rank`.
    #[module(skip)]
    pub scale: f64,
}

/// A 2-D convolution with an optional LoRA adapter.
#[derive(Module, Debug)]
pub struct LoraConv2d<B: Backend> {
    /// `[out, in, kh, kw]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub lora: Option<LoraPair<B, 4>>,
    #[module(skip)]
    stride: usize,
    #[module(skip)]
    padding: usize,
}

impl<B: Backend> LoraConv2d<B> {
    /// A `k x k` convolution with `padding = k / 2` ("same" for stride 1).
    pub fn new(channels_in: usize, channels_out: usize, kernel: usize, device: &B::Device) -> Self {
        Self::with_stride(channels_in, channels_out, kernel, 1, device)
    }

    /// As [`Self::new`] with a stride (2 for a downsampling convolution).
    pub fn with_stride(
        channels_in: usize,
        channels_out: usize,
        kernel: usize,
        stride: usize,
        device: &B::Device,
    ) -> Self {
        let conv = Conv2dConfig::new([channels_in, channels_out], [kernel, kernel])
            .with_padding(PaddingConfig2d::Explicit(
                kernel / 2,
                kernel / 2,
                kernel / 2,
                kernel / 2,
            ))
            .init::<B>(device);
        Self {
            weight: conv.weight,
            bias: conv.bias,
            lora: None,
            stride,
            padding: kernel / 2,
        }
    }

    /// Re-initialise the weight and bias to zero (for output layers of residual branches).
    pub fn zeroed(mut self) -> Self {
        self.weight = self.weight.map(|w| w.zeros_like());
        self.bias = self.bias.map(|b| b.map(|b| b.zeros_like()));
        self
    }

    /// Drops the bias (layers that have none in the pretrained networks).
    pub fn without_bias(mut self) -> Self {
        self.bias = None;
        self
    }

    /// `[out, in, kh, kw]` of the base weight.
    pub fn weight_dims(&self) -> [usize; 4] {
        self.weight.dims()
    }

    /// # Shapes
    /// `[n, in, h, w] -> [n, out, h / stride, w / stride]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let base = conv2d_layer(
            x.clone(),
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            self.stride,
            self.padding,
        );
        match &self.lora {
            None => base,
            Some(pair) => {
                let low = conv2d_layer(x, pair.lora_down.val(), None, self.stride, self.padding);
                let up = conv2d_layer(low, pair.lora_up.val(), None, 1, 0);
                base + up.mul_scalar(pair.scale)
            }
        }
    }

    /// Multiply-accumulate FLOPs (2 per MAC) for an `h x w` input, base weights only.
    pub fn flops(&self, h: usize, w: usize) -> u64 {
        let [out, inp, kh, kw] = self.weight.dims();
        let (oh, ow) = (h.div_ceil(self.stride), w.div_ceil(self.stride));
        2 * (out * inp * kh * kw * oh * ow) as u64
    }
}

impl<B: Backend> LoraTarget<B> for LoraConv2d<B> {
    fn attach_lora(mut self, config: &LoraConfig, device: &B::Device) -> Self {
        let [out, inp, kh, kw] = self.weight.dims();
        let fan_in = inp * kh * kw;
        let down = Initializer::KaimingUniform {
            gain: 1.0 / 3f64.sqrt(),
            fan_out_only: false,
        }
        .init_with(
            [config.rank, inp, kh, kw],
            Some(fan_in),
            Some(config.rank),
            device,
        );
        self.lora = Some(LoraPair {
            lora_down: down,
            lora_up: Param::from_tensor(Tensor::zeros([out, config.rank, 1, 1], device)),
            scale: config.scale(),
        });
        self
    }

    fn merge_lora(mut self) -> Self {
        if let Some(pair) = self.lora.take() {
            let [out, inp, kh, kw] = self.weight.dims();
            let rank = pair.lora_down.dims()[0];
            let up = pair.lora_up.val().reshape([out, rank]);
            let down = pair.lora_down.val().reshape([rank, inp * kh * kw]);
            let delta = up
                .matmul(down)
                .reshape([out, inp, kh, kw])
                .mul_scalar(pair.scale);
            self.weight = self.weight.map(|w| w + delta);
        }
        self
    }
}

/// A linear layer (`y = x W + b`, `W: [in, out]`) with an optional LoRA adapter.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub lora: Option<LoraPair<B, 2>>,
}

impl<B: Backend> LoraLinear<B> {
    pub fn new(d_in: usize, d_out: usize, device: &B::Device) -> Self {
        let l = LinearConfig::new(d_in, d_out).init::<B>(device);
        Self {
            weight: l.weight,
            bias: l.bias,
            lora: None,
        }
    }

    /// # Shapes
    /// `[..., in] -> [..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let base = linear(
            x.clone(),
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
        );
        match &self.lora {
            None => base,
            Some(pair) => {
                let low = linear(x, pair.lora_down.val(), None);
                base + linear(low, pair.lora_up.val(), None).mul_scalar(pair.scale)
            }
        }
    }

    /// FLOPs for `tokens` input rows.
    pub fn flops(&self, tokens: usize) -> u64 {
        let [inp, out] = self.weight.dims();
        2 * (inp * out * tokens) as u64
    }
}

impl<B: Backend> LoraTarget<B> for LoraLinear<B> {
    fn attach_lora(mut self, config: &LoraConfig, device: &B::Device) -> Self {
        let [inp, out] = self.weight.dims();
        let bound = 1.0 / (inp as f64).sqrt();
        self.lora = Some(LoraPair {
            lora_down: Param::from_tensor(Tensor::random(
                [inp, config.rank],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            lora_up: Param::from_tensor(Tensor::zeros([config.rank, out], device)),
            scale: config.scale(),
        });
        self
    }

    fn merge_lora(mut self) -> Self {
        if let Some(pair) = self.lora.take() {
            let delta = pair
                .lora_down
                .val()
                .matmul(pair.lora_up.val())
                .mul_scalar(pair.scale);
            self.weight = self.weight.map(|w| w + delta);
        }
        self
    }
}

impl<B: Backend, T: LoraTarget<B>> LoraTarget<B> for Vec<T> {
    fn attach_lora(self, config: &LoraConfig, device: &B::Device) -> Self {
        self.into_iter()
            .map(|m| m.attach_lora(config, device))
            .collect()
    }
    fn merge_lora(self) -> Self {
        self.into_iter().map(LoraTarget::merge_lora).collect()
    }
}

impl<B: Backend, T: LoraTarget<B>> LoraTarget<B> for Option<T> {
    fn attach_lora(self, config: &LoraConfig, device: &B::Device) -> Self {
        self.map(|m| m.attach_lora(config, device))
    }
    fn merge_lora(self) -> Self {
        self.map(LoraTarget::merge_lora)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::{TestBackend, device, max_abs_diff};

    /// Make the adapter non-trivial, as after some training.
    fn perturb_up<const D: usize>(pair: &mut Option<LoraPair<TestBackend, D>>) {
        let pair = pair.as_mut().unwrap();
        let up = pair.lora_up.val();
        let shape = up.shape();
        pair.lora_up = Param::from_tensor(Tensor::random(
            shape,
            Distribution::Normal(0.0, 0.5),
            &up.device(),
        ));
    }

    #[test]
    fn fresh_conv_lora_leaves_output_unchanged() {
        let dev = device();
        let conv = LoraConv2d::<TestBackend>::new(3, 5, 3, &dev);
        let x = Tensor::random([2, 3, 6, 7], Distribution::Normal(0.0, 1.0), &dev);
        let before = conv.forward(x.clone());
        let conv = conv.attach_lora(&LoraConfig::new(), &dev);
        assert!(conv.lora.is_some());
        assert_eq!(max_abs_diff(conv.forward(x), before), 0.0);
    }

    #[test]
    fn merged_conv_equals_unmerged() {
        let dev = device();
        for stride in [1, 2] {
            let mut conv = LoraConv2d::<TestBackend>::with_stride(4, 6, 3, stride, &dev)
                .attach_lora(&LoraConfig::new().with_rank(2).with_alpha(3.0), &dev);
            perturb_up(&mut conv.lora);
            let x = Tensor::random([1, 4, 8, 8], Distribution::Normal(0.0, 1.0), &dev);
            let unmerged = conv.forward(x.clone());
            let merged = conv.merge_lora();
            assert!(merged.lora.is_none());
            let diff = max_abs_diff(merged.forward(x), unmerged.clone());
            assert!(diff < 1e-5, "stride {stride}: diff {diff}");
        }
    }

    #[test]
    fn trained_adapter_changes_output() {
        let dev = device();
        let mut conv =
            LoraConv2d::<TestBackend>::new(3, 3, 1, &dev).attach_lora(&LoraConfig::new(), &dev);
        let x = Tensor::random([1, 3, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
        let before = conv.forward(x.clone());
        perturb_up(&mut conv.lora);
        assert!(max_abs_diff(conv.forward(x), before) > 1e-3);
    }

    #[test]
    fn linear_lora_fresh_and_merged() {
        let dev = device();
        let lin = LoraLinear::<TestBackend>::new(8, 5, &dev);
        let x = Tensor::<TestBackend, 3>::random([2, 3, 8], Distribution::Normal(0.0, 1.0), &dev);
        let base = lin.forward(x.clone());
        let mut lin = lin.attach_lora(&LoraConfig::new().with_rank(3), &dev);
        assert_eq!(max_abs_diff(lin.forward(x.clone()), base), 0.0);
        perturb_up(&mut lin.lora);
        let unmerged = lin.forward(x.clone());
        let merged = lin.merge_lora();
        let diff = max_abs_diff(merged.forward(x), unmerged);
        assert!(diff < 1e-5, "diff {diff}");
    }
}
