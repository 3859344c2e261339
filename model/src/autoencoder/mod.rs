//! Encoder E and decoder D (method.md section 2, steps 2 and 6): the TAESD family of tiny
//! autoencoders, the architecture of the pretrained TAEF2 (madebyollin/taesd, MIT) that the
//! shipped model uses frozen, as the paper uses SD's VAE.
//!
//! A [`TaeBlock`] is three 3x3 convolutions with ReLUs between them plus an identity skip,
//! then a ReLU. The blocks at 1/8 resolution ("midblocks") first add a global branch to their
//! input: 1x1 conv c -> 4c, GroupNorm (statistics of the *whole* feature map), ReLU, 1x1 conv
//! 4c -> c. That GroupNorm makes E and D non-local, so each is split in two:
//!
//! - a **local** part at full to 1/2 .. 1/8 resolution (pure convolutions with a finite
//!   receptive field): the expensive part, which can run on tiles with a halo and give the
//!   same numbers as on the whole image ([`Encoder::forward_local`], [`Decoder::forward_local`]);
//! - a **global** part at 1/8 resolution (the midblocks): cheap (1/64 of the pixels), always
//!   run on the whole image's feature map ([`Encoder::forward_global`], [`Decoder::forward_global`]).
//!
//! Images are in [-1, 1] at the interface (the project's convention); TAESD works in [0, 1],
//! so the mapping happens here. Latents are unscaled (the pipeline multiplies by k).

use burn::{
    module::Module,
    nn::GroupNorm,
    tensor::{Tensor, activation, backend::Backend},
};

use crate::{
    blocks::{group_norm, upsample_nearest_2x},
    lora::{LoraConfig, LoraConv2d, LoraTarget},
    preset::ModelConfig,
};

/// Downsampling factor f of every TAESD-family autoencoder (three stride-2 stages).
pub const DOWNSAMPLE: usize = 8;
/// Stride-2 stages of the encoder (and 2x stages of the decoder).
const STAGES: usize = 3;
/// Blocks per encoder stage (the last stage's are midblocks).
const ENCODER_BLOCKS: usize = 3;
/// Midblocks at the start of the decoder.
const DECODER_MIDBLOCKS: usize = 3;
/// Blocks per decoder 2x stage, lowest resolution first.
const DECODER_BLOCKS: [usize; STAGES] = [3, 3, 1];
/// The decoder's input soft clamp: `tanh(z / 3) * 3`.
const LATENT_CLAMP: f64 = 3.0;

/// Receptive-field radius of the local parts, in pixels of their output (decoder) or input
/// (encoder), rounded up to whole latent cells: a tile computed with this halo around it
/// equals the whole-image computation inside the tile. Derived from the layer list: the
/// encoder's local part reaches 1 + 3 (full res) + 2 * (1 + 9) + 4 * (1 + 9) + 8 = 72 pixels;
/// the decoder's 1/8 features reach 10 * 4 + 10 * 2 + 5 = 65 output pixels.
pub const LOCAL_HALO_LATENT: usize = 9;

/// The global branch of a midblock.
#[derive(Module, Debug)]
pub struct GlobalBranch<B: Backend> {
    /// 1x1, c -> 4c, no bias.
    pub expand: LoraConv2d<B>,
    pub norm: GroupNorm<B>,
    /// 1x1, 4c -> c, no bias.
    pub project: LoraConv2d<B>,
}

/// `relu(conv3(relu(conv2(relu(conv1(x'))))) + x')` with `x' = x + global(x)` in midblocks.
#[derive(Module, Debug)]
pub struct TaeBlock<B: Backend> {
    pub conv_1: LoraConv2d<B>,
    pub conv_2: LoraConv2d<B>,
    pub conv_3: LoraConv2d<B>,
    pub global: Option<GlobalBranch<B>>,
}

impl<B: Backend> TaeBlock<B> {
    fn new(channels: usize, global_groups: Option<usize>, device: &B::Device) -> Self {
        let global = global_groups.map(|groups| GlobalBranch {
            expand: LoraConv2d::new(channels, 4 * channels, 1, device).without_bias(),
            norm: group_norm(groups, 4 * channels, device),
            project: LoraConv2d::new(4 * channels, channels, 1, device).without_bias(),
        });
        Self {
            conv_1: LoraConv2d::new(channels, channels, 3, device),
            conv_2: LoraConv2d::new(channels, channels, 3, device),
            conv_3: LoraConv2d::new(channels, channels, 3, device),
            global,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = match &self.global {
            Some(g) => {
                let branch = g.project.forward(activation::relu(
                    g.norm.forward(g.expand.forward(x.clone())),
                ));
                x + branch
            }
            None => x,
        };
        let h = activation::relu(self.conv_1.forward(x.clone()));
        let h = activation::relu(self.conv_2.forward(h));
        activation::relu(self.conv_3.forward(h) + x)
    }

    fn flops(&self, h: usize, w: usize) -> u64 {
        let convs = [&self.conv_1, &self.conv_2, &self.conv_3]
            .iter()
            .map(|c| c.flops(h, w))
            .sum::<u64>();
        let global = self
            .global
            .as_ref()
            .map_or(0, |g| g.expand.flops(h, w) + g.project.flops(h, w));
        convs + global
    }
}

impl<B: Backend> LoraTarget<B> for TaeBlock<B> {
    /// LoRA on the 3x3 convolutions (the global branch is a small 1x1 pair; it stays as is).
    fn attach_lora(self, config: &LoraConfig, device: &B::Device) -> Self {
        Self {
            conv_1: self.conv_1.attach_lora(config, device),
            conv_2: self.conv_2.attach_lora(config, device),
            conv_3: self.conv_3.attach_lora(config, device),
            ..self
        }
    }

    fn merge_lora(self) -> Self {
        Self {
            conv_1: self.conv_1.merge_lora(),
            conv_2: self.conv_2.merge_lora(),
            conv_3: self.conv_3.merge_lora(),
            ..self
        }
    }
}

/// A stride-2 convolution (no bias) and its blocks.
#[derive(Module, Debug)]
pub struct EncoderStage<B: Backend> {
    pub downsample: LoraConv2d<B>,
    pub blocks: Vec<TaeBlock<B>>,
}

/// Nearest 2x upsampling, a convolution (no bias) and its blocks.
#[derive(Module, Debug)]
pub struct DecoderStage<B: Backend> {
    pub conv: LoraConv2d<B>,
    pub blocks: Vec<TaeBlock<B>>,
}

/// E: image in [-1, 1] to an (unscaled) latent at 1/8 resolution.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub conv_in: LoraConv2d<B>,
    pub block_in: TaeBlock<B>,
    /// The three stride-2 stages; the last one's blocks are the midblocks (global part).
    pub stages: Vec<EncoderStage<B>>,
    pub conv_out: LoraConv2d<B>,
}

/// D: (unscaled) latent to an image in about [-1, 1] (not clamped).
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub conv_in: LoraConv2d<B>,
    pub mid_blocks: Vec<TaeBlock<B>>,
    /// The three 2x stages, lowest resolution first.
    pub stages: Vec<DecoderStage<B>>,
    pub conv_out: LoraConv2d<B>,
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
        let (c, groups) = (
            config.autoencoder.channels,
            config.autoencoder.global_groups,
        );
        let stages = (0..STAGES)
            .map(|stage| EncoderStage {
                downsample: LoraConv2d::with_stride(c, c, 3, 2, device).without_bias(),
                blocks: (0..ENCODER_BLOCKS)
                    .map(|_| TaeBlock::new(c, (stage + 1 == STAGES).then_some(groups), device))
                    .collect(),
            })
            .collect();
        Self {
            conv_in: LoraConv2d::new(config.image_channels, c, 3, device),
            block_in: TaeBlock::new(c, None, device),
            stages,
            conv_out: LoraConv2d::new(c, config.latent_channels, 3, device),
        }
    }

    /// The whole encoder. `[n, 3, H, W] -> [n, C, H / 8, W / 8]` (H, W multiples of 8).
    pub fn forward(&self, image: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_global(self.forward_local(image))
    }

    /// The local part: everything up to the last stride-2 convolution.
    /// `[n, 3, H, W] in [-1, 1] -> [n, c, H / 8, W / 8]`.
    pub fn forward_local(&self, image: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = image.add_scalar(1.0).mul_scalar(0.5);
        let mut h = self.block_in.forward(self.conv_in.forward(x));
        let (last, rest) = self.stages.split_last().expect("three stages");
        for stage in rest {
            h = stage.downsample.forward(h);
            for block in &stage.blocks {
                h = block.forward(h);
            }
        }
        last.downsample.forward(h)
    }

    /// The global part: the midblocks and the output convolution, on the whole feature map.
    pub fn forward_global(&self, features: Tensor<B, 4>) -> Tensor<B, 4> {
        let last = self.stages.last().expect("three stages");
        let h = last.blocks.iter().fold(features, |h, b| b.forward(h));
        self.conv_out.forward(h)
    }

    /// FLOPs for a `height x width` image.
    pub fn flops(&self, height: usize, width: usize) -> u64 {
        let (mut h, mut w) = (height, width);
        let mut total = self.conv_in.flops(h, w) + self.block_in.flops(h, w);
        for stage in &self.stages {
            total += stage.downsample.flops(h, w);
            (h, w) = (h / 2, w / 2);
            total += stage.blocks.iter().map(|b| b.flops(h, w)).sum::<u64>();
        }
        total + self.conv_out.flops(h, w)
    }
}

impl<B: Backend> Decoder<B> {
    /// Built from a validated config.
    pub fn new(config: &ModelConfig, device: &B::Device) -> Self {
        let (c, groups) = (
            config.autoencoder.channels,
            config.autoencoder.global_groups,
        );
        let stages = DECODER_BLOCKS
            .iter()
            .map(|&blocks| DecoderStage {
                conv: LoraConv2d::new(c, c, 3, device).without_bias(),
                blocks: (0..blocks)
                    .map(|_| TaeBlock::new(c, None, device))
                    .collect(),
            })
            .collect();
        Self {
            conv_in: LoraConv2d::new(config.latent_channels, c, 3, device),
            mid_blocks: (0..DECODER_MIDBLOCKS)
                .map(|_| TaeBlock::new(c, Some(groups), device))
                .collect(),
            stages,
            conv_out: LoraConv2d::new(c, config.image_channels, 3, device),
        }
    }

    /// The whole decoder. `[n, C, h, w] -> [n, 3, 8h, 8w]`.
    pub fn forward(&self, latent: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_local(self.forward_global(latent))
    }

    /// The global part: soft clamp, input convolution, the midblocks (whole feature map).
    /// `[n, C, h, w] -> [n, c, h, w]`.
    pub fn forward_global(&self, latent: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = latent
            .div_scalar(LATENT_CLAMP)
            .tanh()
            .mul_scalar(LATENT_CLAMP);
        let h = activation::relu(self.conv_in.forward(z));
        self.mid_blocks.iter().fold(h, |h, b| b.forward(h))
    }

    /// The local part: the three 2x stages and the output convolution, back to [-1, 1].
    /// `[n, c, h, w] -> [n, 3, 8h, 8w]`.
    pub fn forward_local(&self, features: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = features;
        for stage in &self.stages {
            h = stage.conv.forward(upsample_nearest_2x(h));
            for block in &stage.blocks {
                h = block.forward(h);
            }
        }
        self.conv_out.forward(h).mul_scalar(2.0).sub_scalar(1.0)
    }

    /// FLOPs for a `height x width` latent.
    pub fn flops(&self, height: usize, width: usize) -> u64 {
        let (mut h, mut w) = (height, width);
        let mut total =
            self.conv_in.flops(h, w) + self.mid_blocks.iter().map(|b| b.flops(h, w)).sum::<u64>();
        for stage in &self.stages {
            (h, w) = (h * 2, w * 2);
            total += stage.conv.flops(h, w);
            total += stage.blocks.iter().map(|b| b.flops(h, w)).sum::<u64>();
        }
        total + self.conv_out.flops(h, w)
    }
}

impl<B: Backend> LoraTarget<B> for Encoder<B> {
    fn attach_lora(self, config: &LoraConfig, device: &B::Device) -> Self {
        Self {
            conv_in: self.conv_in.attach_lora(config, device),
            block_in: self.block_in.attach_lora(config, device),
            stages: self
                .stages
                .into_iter()
                .map(|s| EncoderStage {
                    downsample: s.downsample.attach_lora(config, device),
                    blocks: s.blocks.attach_lora(config, device),
                })
                .collect(),
            conv_out: self.conv_out.attach_lora(config, device),
        }
    }

    fn merge_lora(self) -> Self {
        Self {
            conv_in: self.conv_in.merge_lora(),
            block_in: self.block_in.merge_lora(),
            stages: self
                .stages
                .into_iter()
                .map(|s| EncoderStage {
                    downsample: s.downsample.merge_lora(),
                    blocks: s.blocks.merge_lora(),
                })
                .collect(),
            conv_out: self.conv_out.merge_lora(),
        }
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
    use crate::test_backend::{TestBackend, device, max_abs_diff};
    use burn::tensor::Distribution;

    #[test]
    fn shapes_follow_the_downsampling_factor() {
        let dev = device();
        let config = ModelConfig::tiny();
        let ae = Autoencoder::<TestBackend>::new(&config, &dev);
        let x = Tensor::random([2, 3, 16, 24], Distribution::Uniform(-1.0, 1.0), &dev);
        let z = ae.encoder.forward(x);
        assert_eq!(z.dims(), [2, config.latent_channels, 2, 3]);
        assert_eq!(ae.decoder.forward(z).dims(), [2, 3, 16, 24]);
    }

    #[test]
    fn flops_grow_linearly_with_pixels() {
        let dev = device();
        let ae = Autoencoder::<TestBackend>::new(&ModelConfig::tiny(), &dev);
        let small = ae.encoder.flops(32, 32) + ae.decoder.flops(4, 4);
        let large = ae.encoder.flops(64, 64) + ae.decoder.flops(8, 8);
        assert_eq!(large, 4 * small);
    }

    /// The decoder's local part on a latent crop with the halo equals the whole decode in the
    /// crop's interior: what exact tiling relies on.
    #[test]
    fn local_decoder_with_halo_equals_whole_decode() {
        let dev = device();
        let ae = Autoencoder::<TestBackend>::new(&ModelConfig::tiny(), &dev);
        let (h, w) = (2 * LOCAL_HALO_LATENT + 4, 2 * LOCAL_HALO_LATENT + 6);
        let z = Tensor::random([1, 4, h, w], Distribution::Normal(0.0, 1.0), &dev);
        let features = ae.decoder.forward_global(z);
        let whole = ae.decoder.forward_local(features.clone());
        // A tile on the top border (no halo needed there: both see the image edge) with a
        // full halo on its other sides.
        let (y0, x0, th, tw, halo) = (0, LOCAL_HALO_LATENT, 3, 4, LOCAL_HALO_LATENT);
        let channels = features.dims()[1];
        let crop = features.slice([
            0..1,
            0..channels,
            y0..y0 + th + halo,
            x0 - halo..x0 + tw + halo,
        ]);
        let tile = ae.decoder.forward_local(crop);
        let f = DOWNSAMPLE;
        let inner = tile.slice([0..1, 0..3, 0..th * f, halo * f..(halo + tw) * f]);
        let reference = whole.slice([0..1, 0..3, y0 * f..(y0 + th) * f, x0 * f..(x0 + tw) * f]);
        assert!(max_abs_diff(inner, reference) < 1e-5);
    }
}
