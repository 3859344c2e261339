//! The timestep-conditioned eps-UNet (method.md section 2, step 4).
//!
//! diffusers vocabulary: `time_embedding`, `conv_in`, `down_blocks`, `mid_block`, `up_blocks`,
//! `conv_norm_out`, `conv_out`. Each level has `blocks_per_level` residual blocks on the way
//! down and one more on the way up, where every block consumes one skip connection
//! (concatenated on channels). Self-attention sits in the middle block, at the lowest
//! resolution, where the token count is smallest.

use burn::{
    module::Module,
    nn::GroupNorm,
    tensor::{Tensor, TensorData, activation, backend::Backend},
};

use crate::{
    blocks::{ResBlock, SpatialAttention, group_norm, timestep_embedding, upsample_nearest_2x},
    lora::{LoraConfig, LoraConv2d, LoraLinear, LoraTarget},
    preset::ModelConfig,
};

/// Sinusoidal features of the timestep, then a two-layer MLP.
#[derive(Module, Debug)]
pub struct TimestepMlp<B: Backend> {
    pub linear_1: LoraLinear<B>,
    pub linear_2: LoraLinear<B>,
    #[module(skip)]
    sinusoid_dim: usize,
}

/// One level on the way down.
#[derive(Module, Debug)]
pub struct DownLevel<B: Backend> {
    pub resnets: Vec<ResBlock<B>>,
    /// Stride-2 convolution (all levels but the deepest).
    pub downsample: Option<LoraConv2d<B>>,
}

/// Residual block, attention, residual block at the lowest resolution.
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    pub resnet_1: ResBlock<B>,
    pub attention: SpatialAttention<B>,
    pub resnet_2: ResBlock<B>,
}

/// One level on the way up.
#[derive(Module, Debug)]
pub struct UpLevel<B: Backend> {
    pub resnets: Vec<ResBlock<B>>,
    /// Nearest 2x upsampling then a 3x3 convolution (all levels but the top).
    pub upsample: Option<LoraConv2d<B>>,
}

/// Predicts the noise eps in a latent `z_t` at timestep `t`.
#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    pub time_embedding: TimestepMlp<B>,
    pub conv_in: LoraConv2d<B>,
    pub down_blocks: Vec<DownLevel<B>>,
    pub mid_block: MidBlock<B>,
    /// Deepest level first.
    pub up_blocks: Vec<UpLevel<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: LoraConv2d<B>,
}

impl<B: Backend> UNet<B> {
    /// Built from a validated config.
    pub fn new(config: &ModelConfig, device: &B::Device) -> Self {
        let u = &config.unet;
        let (ch, g, blocks) = (&u.channels, u.norm_groups, u.blocks_per_level);
        let time_dim = 4 * ch[0];
        let mut current = ch[0];
        // Channel counts of the skip connections, pushed in the order the forward pass makes them.
        let mut skips = vec![current];
        let down_blocks = ch
            .iter()
            .enumerate()
            .map(|(level, &c)| {
                let resnets = (0..blocks)
                    .map(|_| {
                        let block = ResBlock::new(current, c, Some(time_dim), g, device);
                        current = c;
                        skips.push(c);
                        block
                    })
                    .collect();
                let downsample = (level + 1 < ch.len()).then(|| {
                    skips.push(c);
                    LoraConv2d::with_stride(c, c, 3, 2, device)
                });
                DownLevel {
                    resnets,
                    downsample,
                }
            })
            .collect();
        let mid_block = MidBlock {
            resnet_1: ResBlock::new(current, current, Some(time_dim), g, device),
            attention: SpatialAttention::new(current, u.attention_heads, g, device),
            resnet_2: ResBlock::new(current, current, Some(time_dim), g, device),
        };
        let up_blocks = ch
            .iter()
            .enumerate()
            .rev()
            .map(|(level, &c)| {
                let resnets = (0..=blocks)
                    .map(|_| {
                        let skip = skips.pop().expect("one skip per up block");
                        let block = ResBlock::new(current + skip, c, Some(time_dim), g, device);
                        current = c;
                        block
                    })
                    .collect();
                let upsample = (level > 0).then(|| LoraConv2d::new(c, c, 3, device));
                UpLevel { resnets, upsample }
            })
            .collect();
        debug_assert!(skips.is_empty());
        Self {
            time_embedding: TimestepMlp {
                linear_1: LoraLinear::new(ch[0], time_dim, device),
                linear_2: LoraLinear::new(time_dim, time_dim, device),
                sinusoid_dim: ch[0],
            },
            conv_in: LoraConv2d::new(2 * config.latent_channels, ch[0], 3, device),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(g, ch[0], device),
            conv_out: LoraConv2d::new(ch[0], config.latent_channels, 3, device),
        }
    }

    /// The network's output at the same timestep `t` for the whole batch. Its input is the
    /// noisy latent and the clean LR latent concatenated on channels: the LR latent is what
    /// lets [`crate::Naosd::eps_prediction`] start from the exact eps that returns it.
    ///
    /// # Shapes
    /// `[n, 2C, h, w] -> [n, C, h, w]`, with h, w multiples of `2^(levels - 1)`.
    pub fn forward(&self, z: Tensor<B, 4>, t: usize) -> Tensor<B, 4> {
        let n = z.dims()[0];
        let timesteps = Tensor::from_data(TensorData::new(vec![t as f32; n], [n]), &z.device());
        self.forward_timesteps(z, timesteps)
    }

    /// As [`Self::forward`] with one timestep per batch element.
    ///
    /// # Shapes
    /// `z: [n, 2C, h, w]`, `timesteps: [n]` -> `[n, C, h, w]`
    pub fn forward_timesteps(&self, z: Tensor<B, 4>, timesteps: Tensor<B, 1>) -> Tensor<B, 4> {
        let mlp = &self.time_embedding;
        let temb = timestep_embedding(timesteps, mlp.sinusoid_dim);
        let temb = mlp
            .linear_2
            .forward(activation::silu(mlp.linear_1.forward(temb)));

        let mut h = self.conv_in.forward(z);
        let mut skips = vec![h.clone()];
        for level in &self.down_blocks {
            for block in &level.resnets {
                h = block.forward(h, Some(&temb));
                skips.push(h.clone());
            }
            if let Some(down) = &level.downsample {
                h = down.forward(h);
                skips.push(h.clone());
            }
        }
        let mid = &self.mid_block;
        h = mid.resnet_1.forward(h, Some(&temb));
        h = mid.attention.forward(h);
        h = mid.resnet_2.forward(h, Some(&temb));
        for level in &self.up_blocks {
            for block in &level.resnets {
                let skip = skips.pop().expect("as many skips as up blocks");
                h = block.forward(Tensor::cat(vec![h, skip], 1), Some(&temb));
            }
            if let Some(up) = &level.upsample {
                h = up.forward(upsample_nearest_2x(h));
            }
        }
        self.conv_out
            .forward(activation::silu(self.conv_norm_out.forward(h)))
    }

    /// FLOPs for one `height x width` latent.
    pub fn flops(&self, height: usize, width: usize) -> u64 {
        let (mut h, mut w) = (height, width);
        let mut total = self.conv_in.flops(h, w);
        for level in &self.down_blocks {
            total += level.resnets.iter().map(|b| b.flops(h, w)).sum::<u64>();
            if let Some(down) = &level.downsample {
                total += down.flops(h, w);
                (h, w) = (h / 2, w / 2);
            }
        }
        let mid = &self.mid_block;
        total += mid.resnet_1.flops(h, w) + mid.attention.flops(h, w) + mid.resnet_2.flops(h, w);
        for level in &self.up_blocks {
            total += level.resnets.iter().map(|b| b.flops(h, w)).sum::<u64>();
            if let Some(up) = &level.upsample {
                (h, w) = (h * 2, w * 2);
                total += up.flops(h, w);
            }
        }
        total + self.conv_out.flops(h, w)
    }
}

impl<B: Backend> LoraTarget<B> for UNet<B> {
    fn attach_lora(self, c: &LoraConfig, d: &B::Device) -> Self {
        let mid = self.mid_block;
        Self {
            time_embedding: TimestepMlp {
                linear_1: self.time_embedding.linear_1.attach_lora(c, d),
                linear_2: self.time_embedding.linear_2.attach_lora(c, d),
                ..self.time_embedding
            },
            conv_in: self.conv_in.attach_lora(c, d),
            down_blocks: self
                .down_blocks
                .into_iter()
                .map(|l| DownLevel {
                    resnets: l.resnets.attach_lora(c, d),
                    downsample: l.downsample.attach_lora(c, d),
                })
                .collect(),
            mid_block: MidBlock {
                resnet_1: mid.resnet_1.attach_lora(c, d),
                attention: mid.attention.attach_lora(c, d),
                resnet_2: mid.resnet_2.attach_lora(c, d),
            },
            up_blocks: self
                .up_blocks
                .into_iter()
                .map(|l| UpLevel {
                    resnets: l.resnets.attach_lora(c, d),
                    upsample: l.upsample.attach_lora(c, d),
                })
                .collect(),
            conv_out: self.conv_out.attach_lora(c, d),
            ..self
        }
    }

    fn merge_lora(self) -> Self {
        let mid = self.mid_block;
        Self {
            time_embedding: TimestepMlp {
                linear_1: self.time_embedding.linear_1.merge_lora(),
                linear_2: self.time_embedding.linear_2.merge_lora(),
                ..self.time_embedding
            },
            conv_in: self.conv_in.merge_lora(),
            down_blocks: self
                .down_blocks
                .into_iter()
                .map(|l| DownLevel {
                    resnets: l.resnets.merge_lora(),
                    downsample: l.downsample.merge_lora(),
                })
                .collect(),
            mid_block: MidBlock {
                resnet_1: mid.resnet_1.merge_lora(),
                attention: mid.attention.merge_lora(),
                resnet_2: mid.resnet_2.merge_lora(),
            },
            up_blocks: self
                .up_blocks
                .into_iter()
                .map(|l| UpLevel {
                    resnets: l.resnets.merge_lora(),
                    upsample: l.upsample.merge_lora(),
                })
                .collect(),
            conv_out: self.conv_out.merge_lora(),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::{TestBackend, device, max_abs_diff, randomise};
    use burn::tensor::Distribution;

    fn randomise_lora_ups(unet: UNet<TestBackend>) -> UNet<TestBackend> {
        randomise(unet, |path| path.ends_with("lora_up"), 0.05)
    }

    #[test]
    fn output_shape_and_timestep_dependence() {
        let dev = device();
        let config = ModelConfig::tiny();
        let unet = randomise(UNet::<TestBackend>::new(&config, &dev), |_| true, 0.1);
        let z = Tensor::random([2, 8, 8, 12], Distribution::Normal(0.0, 1.0), &dev);
        let a = unet.forward(z.clone(), 100);
        assert_eq!(a.dims(), [2, 4, 8, 12]);
        let b = unet.forward(z, 250);
        assert!(
            max_abs_diff(a, b) > 1e-6,
            "the timestep must change the prediction"
        );
    }

    #[test]
    fn fresh_lora_is_identity_and_merge_matches() {
        let dev = device();
        let unet = UNet::<TestBackend>::new(&ModelConfig::tiny(), &dev);
        let z = Tensor::random([1, 8, 8, 8], Distribution::Normal(0.0, 1.0), &dev);
        let base = unet.forward(z.clone(), 100);
        let with_lora = unet.attach_lora(&LoraConfig::new(), &dev);
        assert_eq!(
            max_abs_diff(with_lora.forward(z.clone(), 100), base.clone()),
            0.0
        );
        let trained = randomise_lora_ups(with_lora);
        let unmerged = trained.forward(z.clone(), 100);
        assert!(
            max_abs_diff(unmerged.clone(), base) > 1e-4,
            "adapters must act"
        );
        let merged = trained.merge_lora();
        let diff = max_abs_diff(merged.forward(z, 100), unmerged);
        assert!(diff < 1e-5, "merged vs unmerged: {diff}");
    }
}
