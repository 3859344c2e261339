//! The NAOSD noise-aware one-step diffusion generator (method.md section 2).
//!
//! 1. `LRup` = bicubic upsample of LR by s (values in [-1, 1]).
//! 2. `z_lr = k * E(LRup)`.
//! 3. `z_n = add_noise(z_lr, eps, t_add)`, eps from the portable [`NoiseField`].
//! 4. `eps_hat = eps_lr + UNet([z_n, z_lr], t_diff)`, where `eps_lr = (z_n - sqrt(abar_{t_diff})
//!    z_lr) / sqrt(1 - abar_{t_diff})` is the eps for which step 5 returns `z_lr` exactly. The
//!    UNet sees the clean LR latent beside the noisy one and predicts only the correction, so
//!    a UNet whose output layer is zero gives `D(E(LRup))`, the bicubic-level image, and
//!    training only adds to it (the pretrained decoder punishes a random start: docs/training.md).
//! 5. `z0 = (z_n - sqrt(1 - abar_{t_diff}) eps_hat) / sqrt(abar_{t_diff})`.
//! 6. `SR = clamp(D(z0 / k), -1, 1)`, then the optional colour fix.
//!
//! Each step is a public method so that the trainer (stage 1 and GDPO) composes the same
//! pieces the browser runs.

use burn::{
    module::Module,
    tensor::{Tensor, backend::Backend, ops::PadMode},
};
use serde::{Deserialize, Serialize};

use crate::{
    autoencoder::Autoencoder,
    colour::{self, ColourFix},
    error::{ModelError, Result},
    lora::{LoraConfig, LoraTarget},
    noise::{NoiseField, NoiseWindow},
    preset::ModelConfig,
    resample::bicubic_upsample,
    schedule::NoiseSchedule,
    unet::UNet,
};

/// Inference options of the one-step pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NaosdOptions {
    /// Upscaling factor s.
    pub scale: usize,
    /// Noise-addition timestep (fidelity vs detail: higher adds more generated detail).
    pub t_add: usize,
    /// Timestep the UNet denoises at.
    pub t_diff: usize,
    /// Seed of the injected noise.
    pub seed: u64,
    pub colour_fix: ColourFix,
}

impl Default for NaosdOptions {
    /// The paper's setting: x4, t_add = 250, t_diff = 100.
    fn default() -> Self {
        Self {
            scale: 4,
            t_add: 250,
            t_diff: 100,
            seed: 0,
            colour_fix: ColourFix::None,
        }
    }
}

/// Where the injected noise of a batch comes from: the seed's [`NoiseField`], batch element
/// `b` reading stream `first_stream + b` from the latent origin (the tiler runs the noisy step
/// on the whole latent, so no caller reads the field elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoiseSource {
    pub seed: u64,
    pub first_stream: u64,
}

impl NoiseSource {
    /// The noise of a latent batch of `dims = [n, C, h, w]`: element `b` is stream
    /// `first_stream + b` of the seed's field, read from the origin.
    pub fn tensor<B: Backend>(&self, dims: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
        let [n, channels, height, width] = dims;
        let window = NoiseWindow {
            stream: 0,
            channels,
            height,
            width,
            origin: (0, 0),
        };
        NoiseField::new(self.seed).tensor::<B>(n, self.first_stream, window, device)
    }
}

/// `eps_lr + unet([z_noisy, z_lr], t)` (module docs, step 4) for any UNet on this
/// architecture: the pipeline's, or a GDPO policy's beside its frozen reference.
///
/// # Errors
/// [`ModelError::InvalidInput`] for a timestep outside the schedule.
pub fn conditioned_eps<B: Backend>(
    unet: &UNet<B>,
    schedule: &NoiseSchedule,
    z_noisy: Tensor<B, 4>,
    z_lr: Tensor<B, 4>,
    t: usize,
) -> Result<Tensor<B, 4>> {
    let abar = schedule.alpha_bar(t)?;
    let eps_lr =
        (z_noisy.clone() - z_lr.clone().mul_scalar(abar.sqrt())).div_scalar((1.0 - abar).sqrt());
    let correction = unet.forward(Tensor::cat(vec![z_noisy, z_lr], 1), t);
    Ok(eps_lr + correction)
}

/// Largest upscaling factor accepted.
pub const MAX_SCALE: usize = 8;

/// The one-step generator: autoencoder plus eps-UNet, with its config.
#[derive(Module, Debug)]
pub struct Naosd<B: Backend> {
    pub autoencoder: Autoencoder<B>,
    pub unet: UNet<B>,
    #[module(skip)]
    config: ModelConfig,
    #[module(skip)]
    schedule: NoiseSchedule,
}

impl ModelConfig {
    /// A randomly initialised model.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] when the config does not validate.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Naosd<B>> {
        self.validate()?;
        Ok(Naosd {
            autoencoder: Autoencoder::new(self, device),
            unet: UNet::new(self, device),
            config: self.clone(),
            schedule: NoiseSchedule::scaled_linear(),
        })
    }
}

impl<B: Backend> Naosd<B> {
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// Replaces the latent scale k (stage 1 estimates it after training the autoencoder).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] unless `k` is finite and positive.
    pub fn set_latent_scale(&mut self, k: f64) -> Result<()> {
        let mut config = self.config.clone();
        config.latent_scale = k;
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Step 2: `z = k * E(image)`.
    ///
    /// # Shapes
    /// `[n, 3, H, W] -> [n, C, H / f, W / f]` (H, W multiples of [`ModelConfig::size_multiple`])
    pub fn encode(&self, image: Tensor<B, 4>) -> Tensor<B, 4> {
        self.autoencoder
            .encoder
            .forward(image)
            .mul_scalar(self.config.latent_scale)
    }

    /// Step 6 without the colour fix: `clamp(D(z / k), -1, 1)`.
    pub fn decode(&self, latent: Tensor<B, 4>) -> Tensor<B, 4> {
        let image = self
            .autoencoder
            .decoder
            .forward(latent.div_scalar(self.config.latent_scale));
        image.clamp(-1.0, 1.0)
    }

    /// Step 4: the eps prediction `eps_lr + UNet([z_noisy, z_lr], t)` (module docs). The same
    /// function is the GDPO policy's and reference's denoiser.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for a timestep outside the schedule.
    pub fn eps_prediction(
        &self,
        z_noisy: Tensor<B, 4>,
        z_lr: Tensor<B, 4>,
        t: usize,
    ) -> Result<Tensor<B, 4>> {
        conditioned_eps(&self.unet, &self.schedule, z_noisy, z_lr, t)
    }

    /// Steps 3 to 5: noise `z_lr` at `t_add` with `eps`, one UNet call at `t_diff`, x0 formula.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for timesteps outside the schedule.
    pub fn one_step(
        &self,
        z_lr: Tensor<B, 4>,
        eps: Tensor<B, 4>,
        t_add: usize,
        t_diff: usize,
    ) -> Result<Tensor<B, 4>> {
        let z_noisy = self.schedule.add_noise(z_lr.clone(), eps, t_add)?;
        let eps_hat = self.eps_prediction(z_noisy.clone(), z_lr, t_diff)?;
        self.schedule.x0_from_eps(z_noisy, eps_hat, t_diff)
    }

    /// Steps 1 to 5 on LR images whose upsampled sides the network accepts: returns
    /// `(LRup, z0)`, for training (stage 1b, GDPO). Inference runs the same functions split
    /// at the autoencoder's global parts ([`Self::encode_features`], [`Self::global_features`],
    /// [`Self::decode_features`]; `crate::tiling`), equal to this path within float rounding
    /// (`the_shipped_model_tiles_exactly` and the tiling tests).
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for timesteps outside the schedule.
    pub fn clean_latent(
        &self,
        lr: Tensor<B, 4>,
        scale: usize,
        noise: NoiseSource,
        t_add: usize,
        t_diff: usize,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        // 1. LRup.
        let lr_up = bicubic_upsample(lr, scale);
        // 2. Encode.
        let z_lr = self.encode(lr_up.clone());
        // 3-5. Noise at t_add, one UNet call at t_diff, x0.
        let z0 = self.denoise_latent(z_lr, noise, t_add, t_diff)?;
        Ok((lr_up, z0))
    }

    /// Steps 3 to 5 on LR latents `z_lr` with the noise of `noise`: the part of the pipeline
    /// after the encoder. GDPO encodes each LR once and calls this on the latent repeated G
    /// times, each copy reading its own noise stream.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for timesteps outside the schedule.
    pub fn denoise_latent(
        &self,
        z_lr: Tensor<B, 4>,
        noise: NoiseSource,
        t_add: usize,
        t_diff: usize,
    ) -> Result<Tensor<B, 4>> {
        let eps = noise.tensor(z_lr.dims(), &z_lr.device());
        self.one_step(z_lr, eps, t_add, t_diff)
    }

    /// Checks options and input size; returns the padded LR size `(h, w)` such that
    /// `s * h` and `s * w` are multiples of [`ModelConfig::size_multiple`].
    fn padded_size(&self, dims: [usize; 4], options: &NaosdOptions) -> Result<(usize, usize)> {
        let [n, c, h, w] = dims;
        let bad = |m: String| Err(ModelError::InvalidInput(m));
        if options.scale == 0 || options.scale > MAX_SCALE {
            return bad(format!(
                "scale must be in 1..={MAX_SCALE}, got {}",
                options.scale
            ));
        }
        if n == 0 || h == 0 || w == 0 {
            return bad(format!("image is empty ({n} images of {w}x{h})"));
        }
        if c != self.config.image_channels {
            return bad(format!(
                "expected {} channels, got {c}",
                self.config.image_channels
            ));
        }
        self.schedule.alpha_bar(options.t_add)?;
        self.schedule.alpha_bar(options.t_diff)?;
        let pad = |len| self.config.padded_lr_side(len, options.scale);
        Ok((pad(h), pad(w)))
    }

    /// The local part of step 2 (`crate::autoencoder` module docs): the encoder up to its
    /// last stride-2 convolution, on `LRup` or a window of it.
    ///
    /// # Shapes
    /// `[n, 3, H, W] -> [n, c, H / f, W / f]`
    pub fn encode_features(&self, lr_up: Tensor<B, 4>) -> Tensor<B, 4> {
        self.autoencoder.encoder.forward_local(lr_up)
    }

    /// The global part of the pipeline, on whole-image 1/8 feature maps: the encoder's
    /// midblocks (`z_lr = k * E`), noise at `t_add` from the seed's field at the origin,
    /// one UNet call at `t_diff`, the x0 formula, and the decoder's midblocks on `z0 / k`.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for timesteps outside the schedule.
    pub fn global_features(
        &self,
        features: Tensor<B, 4>,
        seed: u64,
        t_add: usize,
        t_diff: usize,
    ) -> Result<Tensor<B, 4>> {
        let k = self.config.latent_scale;
        let z_lr = self
            .autoencoder
            .encoder
            .forward_global(features)
            .mul_scalar(k);
        let noise = NoiseSource {
            seed,
            first_stream: 0,
        };
        let z0 = self.denoise_latent(z_lr, noise, t_add, t_diff)?;
        Ok(self.autoencoder.decoder.forward_global(z0.div_scalar(k)))
    }

    /// The local part of step 6: the decoder's 2x stages on decoder features (or a window of
    /// them), clamped to [-1, 1]. With [`Self::global_features`] it is [`Self::decode`].
    ///
    /// # Shapes
    /// `[n, c, h, w] -> [n, 3, h * f, w * f]`
    pub fn decode_features(&self, features: Tensor<B, 4>) -> Tensor<B, 4> {
        self.autoencoder
            .decoder
            .forward_local(features)
            .clamp(-1.0, 1.0)
    }

    /// The whole pipeline on a batch of LR images in [-1, 1], any size: the LR is edge-padded
    /// on the bottom/right to a size the network accepts and the output cropped back. Runs
    /// the three parts that [`crate::TiledUpscale`] runs step by step, so tiled and untiled
    /// outputs agree.
    ///
    /// The noise is the window of the seed's [`NoiseField`] at the origin; batch element `b`
    /// uses noise stream `b`.
    ///
    /// # Shapes
    /// `[n, 3, h, w] -> [n, 3, h * s, w * s]`
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for an empty image, a wrong channel count, a scale outside
    /// `1..=MAX_SCALE` or timesteps outside the schedule.
    pub fn upscale(&self, lr: Tensor<B, 4>, options: &NaosdOptions) -> Result<Tensor<B, 4>> {
        let dims = lr.dims();
        let [n, _, h, w] = dims;
        let (ph, pw) = self.padded_size(dims, options)?;
        let lr = lr.pad([(0, 0), (0, 0), (0, ph - h), (0, pw - w)], PadMode::Edge);
        let s = options.scale;
        // 1. LRup; 2-5 and D's midblocks; 6. decode, colour fix, crop.
        let lr_up = bicubic_upsample(lr, s);
        let features = self.encode_features(lr_up.clone());
        let features =
            self.global_features(features, options.seed, options.t_add, options.t_diff)?;
        let sr = self.decode_features(features);
        let sr = colour::apply(options.colour_fix, sr, lr_up).clamp(-1.0, 1.0);
        Ok(sr.slice([0..n, 0..dims[1], 0..h * s, 0..w * s]))
    }

    /// FLOPs of one upscale producing `out_h x out_w` (multiples of the size multiple),
    /// counted layer by layer from the weights' shapes.
    pub fn flops(&self, out_h: usize, out_w: usize) -> u64 {
        let f = self.config.downsample_factor();
        let (lh, lw) = (out_h / f, out_w / f);
        self.autoencoder.encoder.flops(out_h, out_w)
            + self.unet.flops(lh, lw)
            + self.autoencoder.decoder.flops(lh, lw)
    }

    /// Side of the square output tile on which [`Self::gflops_per_output_megapixel`] counts.
    pub const COST_TILE: usize = 512;

    /// GFLOPs per output megapixel of the encoder, the UNet and the decoder, counted on one
    /// [`Self::COST_TILE`]-sided output tile (the cost that `trainer-native info`, the
    /// benchmarks and the page's time estimate use).
    pub fn gflops_per_output_megapixel(&self) -> [f64; 3] {
        let side = Self::COST_TILE;
        let mp = (side * side) as f64 / 1e6;
        let latent = side / self.config.downsample_factor();
        [
            self.autoencoder.encoder.flops(side, side),
            self.unet.flops(latent, latent),
            self.autoencoder.decoder.flops(latent, latent),
        ]
        .map(|f| f as f64 / 1e9 / mp)
    }

    /// Zeroes the UNet's output layer: the model then returns `D(E(LRup))` (the bicubic-level
    /// start of training on a pretrained autoencoder) whatever the noise.
    pub fn with_zero_correction(mut self) -> Self {
        self.unet.conv_out = self.unet.conv_out.zeroed();
        self
    }

    /// Adds fresh LoRA adapters to the UNet (the GDPO policy; encoder and decoder stay frozen).
    pub fn attach_unet_lora(self, lora: &LoraConfig, device: &B::Device) -> Self {
        Self {
            unet: self.unet.attach_lora(lora, device),
            ..self
        }
    }

    /// Folds the UNet's adapters into its weights.
    pub fn merge_unet_lora(self) -> Self {
        Self {
            unet: self.unet.merge_lora(),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::{TestBackend, device, max_abs_diff, randomise};
    use burn::tensor::Distribution;

    fn trained_like_tiny() -> Naosd<TestBackend> {
        let model = ModelConfig::tiny().init::<TestBackend>(&device()).unwrap();
        randomise(model, |_| true, 0.1)
    }

    fn lr_image() -> Tensor<TestBackend, 4> {
        Tensor::random([1, 3, 6, 5], Distribution::Uniform(-1.0, 1.0), &device())
    }

    #[test]
    fn output_has_scaled_size_and_is_clamped() {
        let model = trained_like_tiny();
        for scale in [1, 2, 4] {
            let opts = NaosdOptions {
                scale,
                ..Default::default()
            };
            let sr = model.upscale(lr_image(), &opts).unwrap();
            assert_eq!(sr.dims(), [1, 3, 6 * scale, 5 * scale]);
            let max: f32 = sr.abs().max().into_scalar();
            assert!(max <= 1.0);
        }
    }

    #[test]
    fn seed_controls_the_output_when_t_add_exceeds_t_diff() {
        let model = trained_like_tiny();
        let lr = lr_image();
        let run = |seed| {
            model
                .upscale(
                    lr.clone(),
                    &NaosdOptions {
                        seed,
                        ..Default::default()
                    },
                )
                .unwrap()
        };
        assert_eq!(max_abs_diff(run(1), run(1)), 0.0, "same seed, same output");
        assert!(
            max_abs_diff(run(1), run(2)) > 1e-4,
            "other seed, other output"
        );
    }

    /// With t_add = t_diff an ideal denoiser cancels the noise exactly; here the check is the
    /// method's algebra: if the UNet returns exactly the injected eps, z0 = z_lr whatever eps.
    #[test]
    fn equal_timesteps_with_exact_denoiser_cancel_the_noise() {
        let model = trained_like_tiny();
        let dev = device();
        let s = model.schedule();
        let z =
            Tensor::<TestBackend, 4>::random([1, 4, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
        for seed in [3, 4] {
            let eps = NoiseField::new(seed).tensor::<TestBackend>(
                1,
                0,
                NoiseWindow {
                    stream: 0,
                    channels: 4,
                    height: 4,
                    width: 4,
                    origin: (0, 0),
                },
                &dev,
            );
            let zn = s.add_noise(z.clone(), eps.clone(), 100).unwrap();
            let z0 = s.x0_from_eps(zn, eps, 100).unwrap();
            assert!(max_abs_diff(z0, z.clone()) < 1e-5);
        }
    }

    /// The parametrisation's promise: with a zeroed correction the output is the decoded LR
    /// latent, exactly, for every seed and t_add.
    #[test]
    fn zero_correction_returns_the_lr_latent() {
        let model = trained_like_tiny().with_zero_correction();
        let dev = device();
        let z_lr =
            Tensor::<TestBackend, 4>::random([1, 4, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
        for t_add in [250, 400, 100] {
            let eps = Tensor::random([1, 4, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
            let z0 = model.one_step(z_lr.clone(), eps, t_add, 100).unwrap();
            assert!(max_abs_diff(z0, z_lr.clone()) < 1e-4);
        }
        let trained = trained_like_tiny();
        let eps = Tensor::random([1, 4, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
        let z0 = trained.one_step(z_lr.clone(), eps, 250, 100).unwrap();
        assert!(
            max_abs_diff(z0, z_lr) > 1e-3,
            "a non-zero correction moves the latent"
        );
    }

    #[test]
    fn colour_fixes_change_the_output() {
        let model = trained_like_tiny();
        let lr = lr_image();
        let run = |colour_fix| {
            model
                .upscale(
                    lr.clone(),
                    &NaosdOptions {
                        colour_fix,
                        ..Default::default()
                    },
                )
                .unwrap()
        };
        let plain = run(ColourFix::None);
        assert!(max_abs_diff(run(ColourFix::Adain), plain.clone()) > 1e-4);
        assert!(max_abs_diff(run(ColourFix::Wavelet), plain) > 1e-4);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let model = trained_like_tiny();
        let dev = device();
        let empty = Tensor::<TestBackend, 4>::zeros([1, 3, 0, 4], &dev);
        assert!(matches!(
            model.upscale(empty, &NaosdOptions::default()),
            Err(ModelError::InvalidInput(_))
        ));
        let gray = Tensor::<TestBackend, 4>::zeros([1, 1, 4, 4], &dev);
        assert!(model.upscale(gray, &NaosdOptions::default()).is_err());
        let opts = NaosdOptions {
            t_add: 1000,
            ..Default::default()
        };
        assert!(model.upscale(lr_image(), &opts).is_err());
        let opts = NaosdOptions {
            scale: 0,
            ..Default::default()
        };
        assert!(model.upscale(lr_image(), &opts).is_err());
    }

    #[test]
    fn merged_policy_equals_unmerged() {
        let dev = device();
        let policy = trained_like_tiny().attach_unet_lora(&LoraConfig::new(), &dev);
        let policy = randomise(policy, |p| p.ends_with("lora_up"), 0.05);
        let lr = lr_image();
        let opts = NaosdOptions::default();
        let unmerged = policy.upscale(lr.clone(), &opts).unwrap();
        let merged = policy.merge_unet_lora().upscale(lr, &opts).unwrap();
        assert!(max_abs_diff(merged, unmerged) < 1e-5);
    }
}
