//! Encoder E and decoder D (method.md section 2, steps 2 and 6).
//!
//! E: pixel-unshuffle by `u`, a 3x3 convolution, residual levels separated by stride-2
//! convolutions, a middle block, then norm/SiLU/conv to C latent channels at 1/f resolution.
//! D mirrors it with sub-pixel (conv + pixel-shuffle) upsampling and ends in a pixel-shuffle
//! by `u`. E is deterministic (no posterior sampling): the one-step pipeline only ever uses
//! the latent's mode, and stage 1 regularises the latent directly.

use burn::{
    module::Module,
    nn::GroupNorm,
    tensor::{Tensor, activation, backend::Backend},
};

use crate::{
    blocks::{ResBlock, group_norm, pixel_shuffle, pixel_unshuffle},
    lora::LoraConv2d,
    preset::ModelConfig,
};

/// One encoder level: residual blocks, then an optional stride-2 downsampling convolution.
#[derive(Module, Debug)]
pub struct EncoderLevel<B: Backend> {
    pub resnets: Vec<ResBlock<B>>,
    pub downsample: Option<LoraConv2d<B>>,
}

/// One decoder level: residual blocks, then an optional sub-pixel 2x upsampling convolution.
#[derive(Module, Debug)]
pub struct DecoderLevel<B: Backend> {
    pub resnets: Vec<ResBlock<B>>,
    /// Produces `4 * next_channels`, pixel-shuffled by 2.
    pub upsample: Option<LoraConv2d<B>>,
}

/// E: image in [-1, 1] to an (unscaled) latent.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub conv_in: LoraConv2d<B>,
    pub down_blocks: Vec<EncoderLevel<B>>,
    pub mid_block: ResBlock<B>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: LoraConv2d<B>,
    #[module(skip)]
    unshuffle: usize,
}

/// D: (unscaled) latent to an image (not clamped).
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub conv_in: LoraConv2d<B>,
    pub mid_block: ResBlock<B>,
    /// Lowest resolution first.
    pub up_blocks: Vec<DecoderLevel<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: LoraConv2d<B>,
    #[module(skip)]
    unshuffle: usize,
}

/// The pair (E, D).
#[derive(Module, Debug)]
pub struct Autoencoder<B: Backend> {
    pub encoder: Encoder<B>,
    pub decoder: Decoder<B>,
}

impl<B: Backend> Encoder<B> {
    /// Built from a validated config.
    pub fn new(config: &ModelConfig, device: &B::Device) -> Self {
        let ae = &config.autoencoder;
        let (u, g, ch) = (ae.pixel_unshuffle, ae.norm_groups, &ae.encoder_channels);
        let mut current = ch[0];
        let down_blocks = ch
            .iter()
            .enumerate()
            .map(|(level, &c)| {
                let resnets = (0..ae.encoder_blocks)
                    .map(|_| {
                        let block = ResBlock::new(current, c, None, g, device);
                        current = c;
                        block
                    })
                    .collect();
                let downsample =
                    (level + 1 < ch.len()).then(|| LoraConv2d::with_stride(c, c, 3, 2, device));
                EncoderLevel {
                    resnets,
                    downsample,
                }
            })
            .collect();
        Self {
            conv_in: LoraConv2d::new(config.image_channels * u * u, ch[0], 3, device),
            down_blocks,
            mid_block: ResBlock::new(current, current, None, g, device),
            conv_norm_out: group_norm(g, current, device),
            conv_out: LoraConv2d::new(current, config.latent_channels, 3, device),
            unshuffle: u,
        }
    }

    /// # Shapes
    /// `[n, image_channels, H, W] -> [n, C, H / f, W / f]` (H, W multiples of f)
    pub fn forward(&self, image: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.conv_in.forward(pixel_unshuffle(image, self.unshuffle));
        for level in &self.down_blocks {
            for block in &level.resnets {
                h = block.forward(h, None);
            }
            if let Some(down) = &level.downsample {
                h = down.forward(h);
            }
        }
        let h = self.mid_block.forward(h, None);
        self.conv_out
            .forward(activation::silu(self.conv_norm_out.forward(h)))
    }

    /// FLOPs for an `height x width` image.
    pub fn flops(&self, height: usize, width: usize) -> u64 {
        let (mut h, mut w) = (height / self.unshuffle, width / self.unshuffle);
        let mut total = self.conv_in.flops(h, w);
        for level in &self.down_blocks {
            total += level.resnets.iter().map(|b| b.flops(h, w)).sum::<u64>();
            if let Some(down) = &level.downsample {
                total += down.flops(h, w);
                (h, w) = (h / 2, w / 2);
            }
        }
        total + self.mid_block.flops(h, w) + self.conv_out.flops(h, w)
    }
}

impl<B: Backend> Decoder<B> {
    /// Built from a validated config.
    pub fn new(config: &ModelConfig, device: &B::Device) -> Self {
        let ae = &config.autoencoder;
        let (u, g, ch) = (ae.pixel_unshuffle, ae.norm_groups, &ae.decoder_channels);
        let deepest = *ch.last().expect("validated: non-empty");
        let mut current = deepest;
        let up_blocks = ch
            .iter()
            .enumerate()
            .rev()
            .map(|(level, &c)| {
                let resnets = (0..ae.decoder_blocks)
                    .map(|_| {
                        let block = ResBlock::new(current, c, None, g, device);
                        current = c;
                        block
                    })
                    .collect();
                let upsample = (level > 0).then(|| {
                    let next = ch[level - 1];
                    let conv = LoraConv2d::new(c, 4 * next, 3, device);
                    current = next;
                    conv
                });
                DecoderLevel { resnets, upsample }
            })
            .collect();
        Self {
            conv_in: LoraConv2d::new(config.latent_channels, deepest, 3, device),
            mid_block: ResBlock::new(deepest, deepest, None, g, device),
            up_blocks,
            conv_norm_out: group_norm(g, ch[0], device),
            conv_out: LoraConv2d::new(ch[0], config.image_channels * u * u, 3, device),
            unshuffle: u,
        }
    }

    /// # Shapes
    /// `[n, C, h, w] -> [n, image_channels, h * f, w * f]`
    pub fn forward(&self, latent: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.mid_block.forward(self.conv_in.forward(latent), None);
        for level in &self.up_blocks {
            for block in &level.resnets {
                h = block.forward(h, None);
            }
            if let Some(up) = &level.upsample {
                h = pixel_shuffle(up.forward(h), 2);
            }
        }
        let h = self
            .conv_out
            .forward(activation::silu(self.conv_norm_out.forward(h)));
        pixel_shuffle(h, self.unshuffle)
    }

    /// FLOPs for a `height x width` latent.
    pub fn flops(&self, height: usize, width: usize) -> u64 {
        let (mut h, mut w) = (height, width);
        let mut total = self.conv_in.flops(h, w) + self.mid_block.flops(h, w);
        for level in &self.up_blocks {
            total += level.resnets.iter().map(|b| b.flops(h, w)).sum::<u64>();
            if let Some(up) = &level.upsample {
                total += up.flops(h, w);
                (h, w) = (h * 2, w * 2);
            }
        }
        total + self.conv_out.flops(h, w)
    }
}

impl<B: Backend> Autoencoder<B> {
    pub fn new(config: &ModelConfig, device: &B::Device) -> Self {
        Self {
            encoder: Encoder::new(config, device),
            decoder: Decoder::new(config, device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::{TestBackend, device};
    use burn::tensor::Distribution;

    #[test]
    fn shapes_follow_the_downsampling_factor() {
        let dev = device();
        let config = ModelConfig::tiny();
        let ae = Autoencoder::<TestBackend>::new(&config, &dev);
        let x = Tensor::random([2, 3, 16, 24], Distribution::Uniform(-1.0, 1.0), &dev);
        let z = ae.encoder.forward(x);
        assert_eq!(z.dims(), [2, 4, 4, 6]);
        assert_eq!(ae.decoder.forward(z).dims(), [2, 3, 16, 24]);
    }

    #[test]
    fn flops_grow_linearly_with_pixels() {
        let dev = device();
        let ae = Autoencoder::<TestBackend>::new(&ModelConfig::tiny(), &dev);
        let small = ae.encoder.flops(32, 32) + ae.decoder.flops(8, 8);
        let large = ae.encoder.flops(64, 64) + ae.decoder.flops(16, 16);
        assert_eq!(large, 4 * small);
    }
}
