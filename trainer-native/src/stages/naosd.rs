//! Stage 1b: the NAOSD one-step generator (method.md section 2; docs/training.md).
//!
//! Starts from the stage-1a weights (E, D, k). E keeps training, now on degraded inputs; the
//! eps-UNet trains from scratch; D is frozen. Per batch: HR crops, LR by the Real-ESRGAN
//! degradation, then exactly the inference path: `LRup`, `z_lr = k E(LRup)`, noise at
//! `t_add`, one UNet call at `t_diff`, x0, `SR = D(z0 / k)`.
//!
//! The reference loss (MSE + LPIPS + a distribution-matching loss against frozen SD-2.1) is
//! replaced by weight-free terms: L1 + multi-scale SSIM + Sobel gradient loss on SR, an MSE
//! between z0 and the clean latent `k E0(HR)` of the frozen stage-1a encoder E0 (the latent
//! the frozen decoder was trained to decode; a moving target from the training E would drift
//! in scale), and a hinge adversarial loss against a PatchGAN
//! discriminator trained from scratch in the same backward pass (its parameters see only the
//! discriminator loss: the generator's adversarial term goes through a gradient-free copy).
//! Optionally a diversity-sensitive term (`diversity`): crops come in pairs that differ only in
//! their noise, and the pair's outputs are rewarded for differing, up to a cap.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::{
    backend::Autodiff,
    module::Module,
    optim::GradientsParams,
    record::{BinFileRecorder, FullPrecisionSettings},
    tensor::Tensor,
    tensor::{backend::AutodiffBackend, backend::Backend},
};
use model::{ModelConfig, Naosd, NaosdOptions, NoiseSource, StoredPrecision, save_weights};
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    backend::BackendTask,
    data::{HostBatch, ImageFolder, item_rng},
    degrade::DegradationConfig,
    eval::downscale_antialiased,
    export::{read_weights, write_atomically},
    image_io::{hstack, planars_to_tensor, tensor_to_planars},
    loss::{
        discriminator::{
            Discriminator, DiscriminatorConfig, generator_adversarial_loss,
            hinge_discriminator_loss,
        },
        gradient_loss, l1, multiscale_ssim_loss,
    },
    metrics::{psnr_y, ssim_y},
    planar::Planar,
    stages::{degraded_crop, degraded_validation, validation_crops},
    train::{
        Losses, RunLimits, Stage, TrainOptions, clip_global_norm, fit, on_private_pool, seeded,
    },
};

/// Loss weights of the NAOSD stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NaosdLoss {
    pub l1: f64,
    pub ms_ssim: f64,
    pub gradient: f64,
    pub latent: f64,
    pub adversarial: f64,
    /// Steps before the adversarial term is switched on (the discriminator trains from the start).
    pub adversarial_start: usize,
    /// Weight of the diversity-sensitive term (Yang et al. 2019, "Diversity-sensitive
    /// conditional GANs"): with it, a micro-batch holds its crops in pairs (same HR, same LR,
    /// different noise streams) and the term rewards each pair's outputs for differing, up to
    /// `diversity_cap`, so that the model uses its noise (GDPO ranks a group of samples that
    /// must differ: docs/gdpo.md). It costs no extra pass: half as many crops per step.
    pub diversity: f64,
    /// Mean absolute difference of a pair's outputs (image units in [-1, 1]; 0.02 is 2.55 of
    /// 255) beyond which the pair earns nothing more: the term asks for variety, not noise.
    pub diversity_cap: f64,
}

impl Default for NaosdLoss {
    fn default() -> Self {
        Self {
            l1: 1.0,
            ms_ssim: 0.2,
            gradient: 0.5,
            latent: 0.5,
            adversarial: 0.02,
            adversarial_start: 0,
            diversity: 0.0,
            diversity_cap: 0.02,
        }
    }
}

/// The TOML config of `trainer-native naosd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NaosdConfig {
    /// Stage-1a weight file (E, D and the latent scale k).
    pub init: PathBuf,
    pub data: PathBuf,
    pub validation: Option<PathBuf>,
    /// HR crop side.
    pub crop: usize,
    /// Whether E trains (a from-scratch stage-1a encoder) or stays frozen (the pretrained
    /// TAEF2 encoder of the shipped model: only the UNet trains).
    #[serde(default = "default_train_encoder")]
    pub train_encoder: bool,
    /// Fraction of training samples whose LR is the plain antialiased bicubic /scale (the
    /// classic SR benchmark input) instead of the Real-ESRGAN degradation.
    #[serde(default)]
    pub bicubic_fraction: f64,
    /// Validation LR: antialiased bicubic instead of the seeded Real-ESRGAN degradation.
    #[serde(default)]
    pub validation_bicubic: bool,
    /// Validation images are centre-cropped to at most this side (whole images when larger
    /// than them: the autoencoder's midblocks see the whole image at inference).
    #[serde(default = "default_validation_side")]
    pub validation_side: usize,
    #[serde(default = "default_t_add")]
    pub t_add: usize,
    #[serde(default = "default_t_diff")]
    pub t_diff: usize,
    pub train: TrainOptions,
    #[serde(default)]
    pub loss: NaosdLoss,
    #[serde(default)]
    pub degradation: DegradationConfig,
    #[serde(default)]
    pub discriminator: DiscriminatorConfig,
}

fn default_validation_side() -> usize {
    256
}
fn default_train_encoder() -> bool {
    true
}
fn default_t_add() -> usize {
    250
}
fn default_t_diff() -> usize {
    100
}

/// Generator and discriminator, trained together, and the frozen stage-1a encoder that
/// defines the clean latent target (the frozen decoder was trained on its latents).
#[derive(Module, Debug)]
pub struct NaosdGan<B: Backend> {
    pub generator: Naosd<B>,
    pub discriminator: Discriminator<B>,
    pub target_encoder: model::autoencoder::Encoder<B>,
}

/// HR crops and their degraded LR, as host data.
pub struct NaosdBatch {
    pub step: usize,
    pub hr: HostBatch,
    pub lr: HostBatch,
}

/// The stage with its data loaded.
pub struct NaosdStage {
    config: NaosdConfig,
    dataset: ImageFolder,
    /// (HR, LR) pairs degraded with a fixed seed, so every validation sees the same inputs.
    validation: Vec<(Planar, Planar)>,
}

impl NaosdStage {
    /// # Errors
    /// Bad config values, unreadable data.
    pub fn new(
        config: NaosdConfig,
        model_config: &ModelConfig,
        dataset: ImageFolder,
    ) -> anyhow::Result<Self> {
        config.train.validate()?;
        config.degradation.validate()?;
        let scale = config.degradation.scale;
        let m = model_config.size_multiple();
        anyhow::ensure!(
            config.crop.is_multiple_of(scale) && config.crop / scale >= 4,
            "crop {} must be a multiple of the scale {scale}",
            config.crop
        );
        anyhow::ensure!(
            config.t_add < 1000 && config.t_diff < 1000,
            "timesteps must be below 1000"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&config.bicubic_fraction),
            "bicubic_fraction must be in [0, 1]"
        );
        let loss = &config.loss;
        anyhow::ensure!(
            loss.diversity >= 0.0 && loss.diversity_cap > 0.0,
            "diversity must be >= 0 and diversity_cap > 0"
        );
        anyhow::ensure!(
            loss.diversity == 0.0 || config.train.batch.is_multiple_of(2),
            "the diversity term pairs a micro-batch's crops: batch {} must be even",
            config.train.batch
        );
        let side = config.validation_side;
        let validation = match &config.validation {
            Some(dir) if config.validation_bicubic => {
                validation_crops(dir, m.max(scale * 4), side, 8)?
                    .into_iter()
                    .map(|hr| {
                        let lr = downscale_antialiased(&hr, scale);
                        (hr, lr)
                    })
                    .collect()
            }
            Some(dir) => degraded_validation(dir, m.max(scale * 4), side, &config.degradation)?,
            None => Vec::new(),
        };
        Ok(Self {
            config,
            dataset,
            validation,
        })
    }

    fn options(&self) -> NaosdOptions {
        NaosdOptions {
            scale: self.config.degradation.scale,
            t_add: self.config.t_add,
            t_diff: self.config.t_diff,
            ..Default::default()
        }
    }
}

impl<B: AutodiffBackend> Stage<B> for NaosdStage {
    type Model = NaosdGan<B>;
    type Batch = NaosdBatch;

    fn name(&self) -> &'static str {
        "naosd"
    }

    fn options(&self) -> &TrainOptions {
        &self.config.train
    }

    fn batch_maker(&self) -> Box<dyn Fn(usize) -> anyhow::Result<NaosdBatch> + Send> {
        let (dataset, crop, batch, seed) = (
            self.dataset.clone(),
            self.config.crop,
            self.config.train.batch,
            self.config.train.seed,
        );
        let degradation = self.config.degradation.clone();
        let bicubic_fraction = self.config.bicubic_fraction;
        // With the diversity term, items 2j and 2j + 1 are the same crop (the same random
        // draws), told apart only by their noise streams.
        let paired = self.config.loss.diversity > 0.0;
        Box::new(move |step| {
            let pairs: Vec<(Planar, Planar)> = (0..batch)
                .into_par_iter()
                .map(|i| {
                    let item = if paired { i / 2 } else { i };
                    let mut rng = item_rng(seed, step as u64, item as u64);
                    if bicubic_fraction > 0.0 && rng.random::<f64>() < bicubic_fraction {
                        let hr = dataset.random_crop(crop, &mut rng);
                        let lr = downscale_antialiased(&hr, degradation.scale);
                        return Ok((hr, lr));
                    }
                    degraded_crop(&dataset, &degradation, crop, &mut rng)
                })
                .collect::<anyhow::Result<_>>()?;
            let (hr, lr): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
            Ok(NaosdBatch {
                step,
                hr: HostBatch::stack(step, &hr),
                lr: HostBatch::stack(step, &lr),
            })
        })
    }

    fn losses(&self, model: &NaosdGan<B>, batch: &NaosdBatch, device: &B::Device) -> Losses<B> {
        let w = &self.config.loss;
        let generator = &model.generator;
        let hr = batch.hr.to_tensor::<B>(device);
        let lr = batch.lr.to_tensor::<B>(device);
        // The inference path itself (method.md section 2, steps 1-5), with training noise.
        let noise = NoiseSource {
            seed: self.config.train.seed ^ 0x6e61_6f73_6400,
            first_stream: (batch.step * batch.lr.count) as u64,
        };
        let (_, z0) = generator
            .clean_latent(
                lr,
                self.config.degradation.scale,
                noise,
                self.config.t_add,
                self.config.t_diff,
            )
            .expect("timesteps validated");
        let sr = generator
            .autoencoder
            .decoder
            .forward(z0.clone().div_scalar(generator.config().latent_scale));
        let pixel = l1(sr.clone(), hr.clone());
        let ssim = multiscale_ssim_loss(sr.clone(), hr.clone());
        let gradient = gradient_loss(sr.clone(), hr.clone());
        let zero = || Tensor::<B, 1>::zeros([1], device);
        // Diversity: mean |SR_2j - SR_2j+1| per pair, capped, averaged over the pairs.
        let diversity = if w.diversity > 0.0 {
            let [n, c, h, wd] = sr.dims();
            let pairs = sr.clone().reshape([n / 2, 2, c * h * wd]);
            let first = pairs.clone().narrow(1, 0, 1);
            let second = pairs.narrow(1, 1, 1);
            (first - second)
                .abs()
                .mean_dim(2)
                .clamp_max(w.diversity_cap)
                .mean()
        } else {
            zero()
        };
        // Terms with a zero weight are not computed: the latent term needs an encoder pass of
        // the HR, which on the pretrained TAEF2 costs as much as the decoder's (470 GFLOP per
        // MP); the PatchGAN costs ~9 GFLOP per MP a pass, but still three passes.
        let latent = if w.latent > 0.0 {
            let z_hr = model
                .target_encoder
                .forward(hr.clone())
                .mul_scalar(generator.config().latent_scale)
                .detach();
            (z0 - z_hr).powi_scalar(2).mean()
        } else {
            zero()
        };
        // Adversarial: the discriminator learns on (HR, detached SR); the generator is scored
        // by a gradient-free copy, so its term moves only the generator.
        let (d_loss, g_adv) = if w.adversarial > 0.0 {
            let d_loss = hinge_discriminator_loss(
                model.discriminator.forward(hr),
                model.discriminator.forward(sr.clone().detach()),
            );
            let frozen = model.discriminator.clone().no_grad();
            (d_loss, generator_adversarial_loss(frozen.forward(sr)))
        } else {
            (zero(), zero())
        };
        let adv_weight = if batch.step >= w.adversarial_start {
            w.adversarial
        } else {
            0.0
        };
        let total = pixel.clone().mul_scalar(w.l1)
            + ssim.clone().mul_scalar(w.ms_ssim)
            + gradient.clone().mul_scalar(w.gradient)
            + latent.clone().mul_scalar(w.latent)
            + g_adv.clone().mul_scalar(adv_weight)
            - diversity.clone().mul_scalar(w.diversity)
            + d_loss.clone();
        Losses {
            total,
            terms: vec![
                ("l1", pixel),
                ("ms_ssim", ssim),
                ("gradient", gradient),
                ("latent_mse", latent),
                ("g_adv", g_adv),
                ("d_hinge", d_loss),
                ("diversity", diversity),
            ],
        }
    }

    fn clip(
        &self,
        model: &NaosdGan<B>,
        grads: GradientsParams,
        max_norm: f64,
    ) -> (GradientsParams, f64) {
        let (grads, generator) = clip_global_norm(&model.generator, grads, max_norm);
        let (grads, discriminator) = clip_global_norm(&model.discriminator, grads, max_norm);
        (grads, generator.max(discriminator))
    }

    fn validate(
        &self,
        ema: &NaosdGan<B::InnerBackend>,
        step: usize,
        out_dir: &Path,
    ) -> anyhow::Result<Vec<(String, f64)>> {
        if self.validation.is_empty() {
            return Ok(Vec::new());
        }
        let device = ema.devices().into_iter().next().expect("a device");
        let options = self.options();
        let (mut psnr, mut ssim, mut psnr_bicubic) = (0.0, 0.0, 0.0);
        for (i, (hr, lr)) in self.validation.iter().enumerate() {
            let lr_t = planars_to_tensor::<B::InnerBackend>(std::slice::from_ref(lr), &device);
            let bicubic =
                model::resample::bicubic_upsample(lr_t.clone(), options.scale).clamp(-1.0, 1.0);
            let bicubic = tensor_to_planars(bicubic)?.remove(0);
            let sr = tensor_to_planars(ema.generator.upscale(lr_t, &options)?)?.remove(0);
            psnr += psnr_y(&sr, hr, options.scale);
            ssim += ssim_y(&sr, hr, options.scale);
            psnr_bicubic += psnr_y(&bicubic, hr, options.scale);
            if i == 0 {
                hstack(&[&bicubic, &sr, hr])
                    .to_rgb8()
                    .save(out_dir.join(format!("naosd-{step:07}.png")))?;
            }
        }
        let n = self.validation.len() as f64;
        Ok(vec![
            ("val_psnr_y".into(), psnr / n),
            ("val_ssim_y".into(), ssim / n),
            ("val_psnr_y_bicubic".into(), psnr_bicubic / n),
        ])
    }
}

/// Runs the stage: loads the stage-1a weights, freezes D, trains (or resumes), writes
/// `run_dir/naosd.safetensors` (EMA generator, f32) and `run_dir/discriminator.bin`.
///
/// # Errors
/// As [`fit`], plus weight-file and export errors.
pub fn run<B: Backend>(
    config: NaosdConfig,
    run_dir: &Path,
    limits: RunLimits,
    devices: &[B::Device],
) -> anyhow::Result<PathBuf> {
    type Ad<B> = Autodiff<B>;
    let device = devices.first().context("no device")?;
    let mut generator = read_weights::<Ad<B>>(&config.init, device)?;
    generator.autoencoder.decoder = generator.autoencoder.decoder.no_grad();
    if !config.train_encoder {
        generator.autoencoder.encoder = generator.autoencoder.encoder.no_grad();
    }
    let discriminator = seeded::<Ad<B>, _>(device, config.train.seed, || {
        config.discriminator.init::<Ad<B>>(device)
    });
    let target_encoder = generator.autoencoder.encoder.clone().no_grad();
    let dataset = ImageFolder::load(&config.data, config.crop)?;
    let threads = config.train.threads;
    let stage = NaosdStage::new(config, generator.config(), dataset)?;
    let fitted = on_private_pool(threads, || {
        fit(
            &stage,
            NaosdGan {
                generator,
                discriminator,
                target_encoder,
            },
            run_dir,
            limits,
            devices,
        )
    })?;
    let out = run_dir.join("naosd.safetensors");
    write_atomically(
        &out,
        &save_weights(&fitted.ema.generator, StoredPrecision::F32)?,
    )?;
    fitted
        .ema
        .discriminator
        .clone()
        .save_file(
            run_dir.join("discriminator"),
            &BinFileRecorder::<FullPrecisionSettings>::new(),
        )
        .map_err(|e| anyhow::anyhow!("cannot save the discriminator: {e:?}"))?;
    Ok(out)
}

/// [`run`] as a [`BackendTask`] for the CLI.
pub struct RunNaosd<'a> {
    pub config: NaosdConfig,
    pub run_dir: &'a Path,
    pub limits: RunLimits,
    /// Data-parallel devices ([`crate::train::devices`]).
    pub devices: usize,
}

impl BackendTask for RunNaosd<'_> {
    type Output = PathBuf;
    const TRAINS: bool = true;
    fn run<B: Backend>(self, _device: B::Device) -> anyhow::Result<PathBuf> {
        let devices = crate::train::devices::<B>(self.devices)?;
        run::<B>(self.config, self.run_dir, self.limits, &devices)
    }
}
