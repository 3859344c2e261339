//! Building blocks shared by the autoencoder and the UNet: pre-norm residual blocks (with an
//! optional timestep input), single-head-group self-attention, sinusoidal timestep embedding,
//! and the pixel (un)shuffle that lets the encoder and decoder compute at low resolution.

use burn::{
    module::Module,
    nn::{GroupNorm, GroupNormConfig},
    tensor::{Tensor, TensorData, activation, backend::Backend},
};

use crate::lora::{LoraConfig, LoraConv2d, LoraLinear, LoraTarget};

/// Rearranges `[n, c, h*r, w*r]` into `[n, c*r*r, h, w]` (space-to-depth).
///
/// # Panics
/// When `h` or `w` is not a multiple of `r` (callers pad first).
pub fn pixel_unshuffle<B: Backend>(x: Tensor<B, 4>, r: usize) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    assert!(
        h % r == 0 && w % r == 0,
        "pixel_unshuffle: {h}x{w} is not a multiple of {r}"
    );
    x.reshape([n, c, h / r, r, w / r, r])
        .permute([0, 1, 3, 5, 2, 4])
        .reshape([n, c * r * r, h / r, w / r])
}

/// Inverse of [`pixel_unshuffle`]: `[n, c*r*r, h, w]` into `[n, c, h*r, w*r]`.
///
/// # Panics
/// When the channel count is not a multiple of `r * r`.
pub fn pixel_shuffle<B: Backend>(x: Tensor<B, 4>, r: usize) -> Tensor<B, 4> {
    let [n, crr, h, w] = x.dims();
    assert!(
        crr % (r * r) == 0,
        "pixel_shuffle: {crr} channels is not a multiple of {r}^2"
    );
    let c = crr / (r * r);
    x.reshape([n, c, r, r, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([n, c, h * r, w * r])
}

/// Nearest-neighbour 2x upsampling by broadcasting (identical on every backend).
pub fn upsample_nearest_2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .expand([n, c, h, 2, w, 2])
        .reshape([n, c, h * 2, w * 2])
}

pub(crate) fn group_norm<B: Backend>(
    groups: usize,
    channels: usize,
    device: &B::Device,
) -> GroupNorm<B> {
    GroupNormConfig::new(groups, channels).init(device)
}

/// Pre-norm residual block: `x + conv2(silu(norm2(conv1(silu(norm1(x))) + proj(temb))))`.
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: LoraConv2d<B>,
    /// Projects the timestep embedding to a per-channel shift (UNet only).
    pub time_emb_proj: Option<LoraLinear<B>>,
    pub norm2: GroupNorm<B>,
    pub conv2: LoraConv2d<B>,
    /// 1x1 projection of the skip path when the channel count changes.
    pub conv_shortcut: Option<LoraConv2d<B>>,
}

impl<B: Backend> ResBlock<B> {
    /// `time_dim = None` builds a block without timestep input (autoencoder).
    pub fn new(
        channels_in: usize,
        channels_out: usize,
        time_dim: Option<usize>,
        groups: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            norm1: group_norm(groups, channels_in, device),
            conv1: LoraConv2d::new(channels_in, channels_out, 3, device),
            time_emb_proj: time_dim.map(|d| LoraLinear::new(d, channels_out, device)),
            norm2: group_norm(groups, channels_out, device),
            // Zero-initialised: every residual block starts as the identity, which keeps deep
            // stacks trainable from scratch.
            conv2: LoraConv2d::new(channels_out, channels_out, 3, device).zeroed(),
            conv_shortcut: (channels_in != channels_out)
                .then(|| LoraConv2d::new(channels_in, channels_out, 1, device)),
        }
    }

    /// # Shapes
    /// `x: [n, in, h, w]`, `temb: [n, time_dim]` (required iff built with a time dimension)
    /// `-> [n, out, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let mut h = self
            .conv1
            .forward(activation::silu(self.norm1.forward(x.clone())));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let shift = proj.forward(activation::silu(temb.clone()));
            h = h + shift.unsqueeze_dims::<4>(&[2, 3]);
        }
        let h = self.conv2.forward(activation::silu(self.norm2.forward(h)));
        let skip = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        skip + h
    }

    pub fn flops(&self, h: usize, w: usize) -> u64 {
        let [out, inp, _, _] = self.conv1.weight_dims();
        // Norms and activations: a handful of elementwise ops per element.
        let elementwise = 10 * ((inp + out) * h * w) as u64;
        self.conv1.flops(h, w)
            + self.conv2.flops(h, w)
            + self.conv_shortcut.as_ref().map_or(0, |c| c.flops(h, w))
            + elementwise
    }
}

impl<B: Backend> LoraTarget<B> for ResBlock<B> {
    fn attach_lora(self, config: &LoraConfig, device: &B::Device) -> Self {
        Self {
            conv1: self.conv1.attach_lora(config, device),
            time_emb_proj: self.time_emb_proj.attach_lora(config, device),
            conv2: self.conv2.attach_lora(config, device),
            conv_shortcut: self.conv_shortcut.attach_lora(config, device),
            ..self
        }
    }
    fn merge_lora(self) -> Self {
        Self {
            conv1: self.conv1.merge_lora(),
            time_emb_proj: self.time_emb_proj.merge_lora(),
            conv2: self.conv2.merge_lora(),
            conv_shortcut: self.conv_shortcut.merge_lora(),
            ..self
        }
    }
}

/// Largest attention score matrix computed at once, in bytes: larger ones are computed in
/// chunks of queries (whole-image latents in the tiler's global step).
pub const ATTENTION_SCORE_BYTES: usize = 32 << 20;

/// Multi-head self-attention over the spatial positions of a feature map, with a residual.
#[derive(Module, Debug)]
pub struct SpatialAttention<B: Backend> {
    pub group_norm: GroupNorm<B>,
    pub to_q: LoraLinear<B>,
    pub to_k: LoraLinear<B>,
    pub to_v: LoraLinear<B>,
    pub to_out: LoraLinear<B>,
    #[module(skip)]
    heads: usize,
}

impl<B: Backend> SpatialAttention<B> {
    pub fn new(channels: usize, heads: usize, groups: usize, device: &B::Device) -> Self {
        let mut to_out = LoraLinear::new(channels, channels, device);
        // Starts as the identity, like the residual blocks.
        to_out.weight = to_out.weight.map(|w| w.zeros_like());
        to_out.bias = to_out.bias.map(|b| b.map(|b| b.zeros_like()));
        Self {
            group_norm: group_norm(groups, channels, device),
            to_q: LoraLinear::new(channels, channels, device),
            to_k: LoraLinear::new(channels, channels, device),
            to_v: LoraLinear::new(channels, channels, device),
            to_out,
            heads,
        }
    }

    /// # Shapes
    /// `[n, c, h, w] -> [n, c, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_in_chunks(x, ATTENTION_SCORE_BYTES)
    }

    /// [`Self::forward`] with score matrices of at most `score_bytes` (at least one query).
    fn forward_in_chunks(&self, x: Tensor<B, 4>, score_bytes: usize) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let (heads, tokens) = (self.heads, h * w);
        let head_dim = c / heads;
        // [n, c, h, w] -> [n, tokens, c]
        let seq = self
            .group_norm
            .forward(x.clone())
            .reshape([n, c, tokens])
            .swap_dims(1, 2);
        let split = |t: Tensor<B, 3>| t.reshape([n, tokens, heads, head_dim]).swap_dims(1, 2);
        let q = split(self.to_q.forward(seq.clone()));
        let k = split(self.to_k.forward(seq.clone()));
        let v = split(self.to_v.forward(seq));
        // Queries in chunks whose score matrix stays within `score_bytes`: the same
        // numbers (each query's softmax needs all keys, not other queries), without a
        // tokens x tokens matrix per head on whole-image latents.
        let chunk = (score_bytes / (4 * n * heads * tokens)).clamp(1, tokens);
        let k_t = k.swap_dims(2, 3);
        let scale = 1.0 / (head_dim as f64).sqrt();
        let attend = |q: Tensor<B, 4>| {
            activation::softmax(q.matmul(k_t.clone()).mul_scalar(scale), 3).matmul(v.clone())
        };
        let attended = if chunk >= tokens {
            attend(q)
        } else {
            let parts = (0..tokens)
                .step_by(chunk)
                .map(|start| {
                    let end = (start + chunk).min(tokens);
                    attend(q.clone().slice([0..n, 0..heads, start..end, 0..head_dim]))
                })
                .collect();
            Tensor::cat(parts, 2)
        }; // [n, heads, tokens, head_dim]
        let merged = attended.swap_dims(1, 2).reshape([n, tokens, c]);
        let out = self
            .to_out
            .forward(merged)
            .swap_dims(1, 2)
            .reshape([n, c, h, w]);
        x + out
    }

    pub fn flops(&self, h: usize, w: usize) -> u64 {
        let tokens = h * w;
        let c = self.to_q.weight.dims()[0];
        4 * self.to_q.flops(tokens)
            + 4 * (tokens * tokens * c) as u64
            + 5 * (self.heads * tokens * tokens) as u64
    }
}

impl<B: Backend> LoraTarget<B> for SpatialAttention<B> {
    fn attach_lora(self, config: &LoraConfig, device: &B::Device) -> Self {
        Self {
            to_q: self.to_q.attach_lora(config, device),
            to_k: self.to_k.attach_lora(config, device),
            to_v: self.to_v.attach_lora(config, device),
            to_out: self.to_out.attach_lora(config, device),
            ..self
        }
    }
    fn merge_lora(self) -> Self {
        Self {
            to_q: self.to_q.merge_lora(),
            to_k: self.to_k.merge_lora(),
            to_v: self.to_v.merge_lora(),
            to_out: self.to_out.merge_lora(),
            ..self
        }
    }
}

/// Sinusoidal embedding of integer timesteps (`[cos | sin]`, max period 10000, as in DDPM).
///
/// The frequencies are computed on the host with `libm` so every backend uses the same ones.
///
/// # Shapes
/// `timesteps: [n]` -> `[n, dim]`
pub fn timestep_embedding<B: Backend>(timesteps: Tensor<B, 1>, dim: usize) -> Tensor<B, 2> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| libm::exp(-libm::log(10000.0) * i as f64 / half as f64) as f32)
        .collect();
    let freqs = Tensor::<B, 1>::from_data(TensorData::new(freqs, [half]), &timesteps.device());
    let args = timesteps.unsqueeze_dim::<2>(1) * freqs.unsqueeze_dim::<2>(0);
    Tensor::cat(vec![args.clone().cos(), args.sin()], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::{TestBackend, device, max_abs_diff};
    use burn::tensor::Distribution;

    #[test]
    fn pixel_shuffle_inverts_unshuffle_and_moves_the_right_pixels() {
        let dev = device();
        let values: Vec<f32> = (0..2 * 4 * 6).map(|v| v as f32).collect();
        let x = Tensor::<TestBackend, 4>::from_data(TensorData::new(values, [1, 2, 4, 6]), &dev);
        let un = pixel_unshuffle(x.clone(), 2);
        assert_eq!(un.dims(), [1, 8, 2, 3]);
        // Channel 1 of the unshuffled map holds input channel 0 at offset (0, 1):
        // positions (0,1),(0,3),(0,5),(2,1),... -> values 1, 3, 5, 13, 15, 17.
        let ch1: Vec<f32> = un.clone().slice([0..1, 1..2]).into_data().to_vec().unwrap();
        assert_eq!(ch1, vec![1.0, 3.0, 5.0, 13.0, 15.0, 17.0]);
        assert_eq!(max_abs_diff(pixel_shuffle(un, 2), x), 0.0);
    }

    #[test]
    fn fresh_blocks_are_identities_and_keep_shapes() {
        let dev = device();
        let x =
            Tensor::<TestBackend, 4>::random([2, 8, 5, 6], Distribution::Normal(0.0, 1.0), &dev);
        let block = ResBlock::new(8, 8, Some(16), 4, &dev);
        let temb = Tensor::random([2, 16], Distribution::Normal(0.0, 1.0), &dev);
        assert_eq!(
            max_abs_diff(block.forward(x.clone(), Some(&temb)), x.clone()),
            0.0
        );
        let attn = SpatialAttention::new(8, 2, 4, &dev);
        assert_eq!(max_abs_diff(attn.forward(x.clone()), x.clone()), 0.0);
        let widen = ResBlock::new(8, 12, None, 4, &dev);
        assert_eq!(widen.forward(x, None).dims(), [2, 12, 5, 6]);
    }

    /// Queries in chunks give the numbers of the whole score matrix.
    #[test]
    fn chunked_attention_equals_whole_attention() {
        let dev = device();
        let attn =
            crate::test_backend::randomise(SpatialAttention::new(8, 2, 4, &dev), |_| true, 0.3);
        let x =
            Tensor::<TestBackend, 4>::random([2, 8, 5, 7], Distribution::Normal(0.0, 1.0), &dev);
        // 35 tokens: 4 * 2 * 2 * 35 bytes per query row, so chunks of 3 queries.
        let chunked = attn.forward_in_chunks(x.clone(), 4 * 2 * 2 * 35 * 3);
        let whole = attn.forward_in_chunks(x.clone(), usize::MAX / 2);
        assert!(max_abs_diff(chunked, whole.clone()) < 1e-5);
        assert!(
            max_abs_diff(whole, x) > 1e-2,
            "the attention is not the identity"
        );
    }

    #[test]
    fn timestep_embedding_values() {
        let dev = device();
        let t = Tensor::<TestBackend, 1>::from_floats([0.0, 100.0], &dev);
        let e: Vec<f32> = timestep_embedding(t, 8).into_data().to_vec().unwrap();
        // t = 0: cos = 1, sin = 0.
        assert_eq!(&e[..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        // t = 100, frequency 0 is 1: cos(100), sin(100).
        assert!((e[8] - 100f32.cos()).abs() < 1e-5 && (e[12] - 100f32.sin()).abs() < 1e-5);
        // Frequency 1 = 10000^(-1/4) = 0.1.
        assert!((e[9] - 10f32.cos()).abs() < 1e-4);
    }
}
