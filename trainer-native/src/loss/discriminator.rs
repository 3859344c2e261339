//! A PatchGAN discriminator trained from scratch (the substitute for the reference's
//! distribution-matching loss against pretrained Stable Diffusion, see docs/training.md).
//! It scores every ~30 px patch as real (HR) or generated; the GDPO reward reuses its score
//! as a learned realism measure.

use burn::{
    module::Module,
    nn::{GroupNorm, GroupNormConfig, PaddingConfig2d, conv::Conv2d, conv::Conv2dConfig},
    tensor::{Tensor, activation, backend::Backend},
};
use serde::{Deserialize, Serialize};

/// Widths of the discriminator's stride-2 stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscriminatorConfig {
    pub channels: Vec<usize>,
}

impl Default for DiscriminatorConfig {
    fn default() -> Self {
        Self {
            channels: vec![32, 64, 128],
        }
    }
}

/// Stride-2 4x4 convolutions with GroupNorm and leaky ReLU, then a 3x3 convolution to one
/// logit per patch.
#[derive(Module, Debug)]
pub struct Discriminator<B: Backend> {
    pub convs: Vec<Conv2d<B>>,
    pub norms: Vec<GroupNorm<B>>,
    pub head: Conv2d<B>,
}

impl DiscriminatorConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Discriminator<B> {
        let mut inputs = 3;
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        for &c in &self.channels {
            convs.push(
                Conv2dConfig::new([inputs, c], [4, 4])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
            );
            norms.push(GroupNormConfig::new(8.min(c), c).init(device));
            inputs = c;
        }
        let head = Conv2dConfig::new([inputs, 1], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        Discriminator { convs, norms, head }
    }
}

impl<B: Backend> Discriminator<B> {
    /// Patch logits.
    ///
    /// # Shapes
    /// `[n, 3, h, w]` in [-1, 1] -> `[n, 1, h / 2^levels, w / 2^levels]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = x;
        for (i, (conv, norm)) in self.convs.iter().zip(&self.norms).enumerate() {
            h = conv.forward(h);
            if i > 0 {
                h = norm.forward(h);
            }
            h = activation::leaky_relu(h, 0.2);
        }
        self.head.forward(h)
    }
}

/// Hinge loss of the discriminator: `relu(1 - D(real)) + relu(1 + D(fake))`.
pub fn hinge_discriminator_loss<B: Backend>(
    real_logits: Tensor<B, 4>,
    fake_logits: Tensor<B, 4>,
) -> Tensor<B, 1> {
    activation::relu(real_logits.neg().add_scalar(1.0)).mean()
        + activation::relu(fake_logits.add_scalar(1.0)).mean()
}

/// Generator's adversarial loss: `-D(fake)`.
pub fn generator_adversarial_loss<B: Backend>(fake_logits: Tensor<B, 4>) -> Tensor<B, 1> {
    fake_logits.mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn patch_logits_shape_and_losses() {
        let device = Default::default();
        let d = DiscriminatorConfig::default().init::<Flex>(&device);
        let x = Tensor::<Flex, 4>::zeros([2, 3, 32, 32], &device);
        assert_eq!(d.forward(x).dims(), [2, 1, 4, 4]);
        // Perfectly separated logits give zero hinge loss; confused ones give 2.
        let ones = Tensor::<Flex, 4>::ones([1, 1, 2, 2], &device);
        let zero: f32 =
            hinge_discriminator_loss(ones.clone().mul_scalar(2.0), ones.clone().mul_scalar(-2.0))
                .into_scalar();
        let two: f32 = hinge_discriminator_loss(ones.clone().mul_scalar(0.0), ones.mul_scalar(0.0))
            .into_scalar();
        assert_eq!((zero, two), (0.0, 2.0));
    }
}
