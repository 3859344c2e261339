//! Stage 1a: train the encoder E and decoder D on HR crops (docs/training.md).
//!
//! Loss = `l1 * |D(E(x)) - x| + ms_ssim * (1 - MS-SSIM) + gradient * |Sobel diff|
//!         + latent * mean(E(x)^2)`: pixel fidelity plus weight-free perceptual terms, and a
//! small latent penalty that keeps the latent bounded (the method's VAE has a KL term; our E
//! is deterministic). Afterwards the latent scale `k = 1 / std(E(x))` is estimated so that
//! scaled latents have unit variance, as SD's 0.18215.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::{
    backend::Autodiff,
    module::{AutodiffModule, Module},
    tensor::{backend::AutodiffBackend, backend::Backend},
};
use model::{ModelConfig, Naosd, StoredPrecision, save_weights};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    backend::BackendTask,
    data::{HostBatch, ImageFolder, item_rng},
    export::write_atomically,
    image_io::{hstack, planars_to_tensor, tensor_to_planars},
    loss::{gradient_loss, l1, multiscale_ssim_loss},
    metrics::{psnr_y, ssim_y},
    planar::Planar,
    stages::validation_crops,
    train::{Losses, RunLimits, Stage, TrainOptions, fit, on_private_pool, seeded},
};

/// Loss weights of the autoencoder stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoencoderLoss {
    pub l1: f64,
    pub ms_ssim: f64,
    pub gradient: f64,
    pub latent: f64,
}

impl Default for AutoencoderLoss {
    fn default() -> Self {
        Self {
            l1: 1.0,
            ms_ssim: 0.2,
            gradient: 0.5,
            latent: 1e-4,
        }
    }
}

/// The TOML config of `trainer-native autoencoder`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Model preset (`tiny`, `base`).
    pub preset: String,
    /// Folder of HR training images.
    pub data: PathBuf,
    /// Folder of held-out HR images (validation).
    pub validation: Option<PathBuf>,
    /// HR crop side (a multiple of the preset's size multiple).
    pub crop: usize,
    pub train: TrainOptions,
    #[serde(default)]
    pub loss: AutoencoderLoss,
}

/// The stage, with its data loaded.
pub struct AutoencoderStage {
    config: AutoencoderConfig,
    model_config: ModelConfig,
    dataset: ImageFolder,
    validation: Vec<Planar>,
}

impl AutoencoderStage {
    /// Validates the config and loads the images.
    ///
    /// # Errors
    /// Bad config values, unreadable data.
    pub fn new(config: AutoencoderConfig, dataset: ImageFolder) -> anyhow::Result<Self> {
        let model_config = ModelConfig::preset(&config.preset)?;
        let m = model_config.size_multiple();
        anyhow::ensure!(
            config.crop >= m && config.crop.is_multiple_of(m),
            "crop {} must be a positive multiple of {m}",
            config.crop
        );
        config.train.validate()?;
        let validation = match &config.validation {
            Some(dir) => validation_crops(dir, m, 256, 8)?,
            None => Vec::new(),
        };
        Ok(Self {
            config,
            model_config,
            dataset,
            validation,
        })
    }

    pub fn model_config(&self) -> &ModelConfig {
        &self.model_config
    }

    /// `k = 1 / std(E(x))` over `batches` training batches (a fixed seed, independent of training).
    pub fn estimate_latent_scale<B: Backend>(
        &self,
        model: &Naosd<B>,
        batches: usize,
        device: &B::Device,
    ) -> f64 {
        let make = self.batch_maker_inner();
        let (mut sum, mut sum_sq, mut n) = (0.0f64, 0.0f64, 0usize);
        for i in 0..batches {
            let batch = make(usize::MAX - i).expect("in-memory batches cannot fail");
            let z = model
                .autoencoder
                .encoder
                .forward(batch.to_tensor::<B>(device));
            let values: Vec<f32> = z.into_data().convert::<f32>().to_vec().expect("f32 data");
            n += values.len();
            for v in values {
                sum += v as f64;
                sum_sq += (v as f64).powi(2);
            }
        }
        let mean = sum / n as f64;
        let std = (sum_sq / n as f64 - mean * mean).max(1e-12).sqrt();
        1.0 / std
    }

    fn batch_maker_inner(&self) -> impl Fn(usize) -> anyhow::Result<HostBatch> + Send + 'static {
        let (dataset, crop, batch, seed) = (
            self.dataset.clone(),
            self.config.crop,
            self.config.train.batch,
            self.config.train.seed,
        );
        move |step| {
            let crops: Vec<Planar> = (0..batch)
                .into_par_iter()
                .map(|i| dataset.random_crop(crop, &mut item_rng(seed, step as u64, i as u64)))
                .collect();
            Ok(HostBatch::stack(step, &crops))
        }
    }
}

impl<B: AutodiffBackend> Stage<B> for AutoencoderStage {
    type Model = Naosd<B>;
    type Batch = HostBatch;

    fn name(&self) -> &'static str {
        "autoencoder"
    }

    fn options(&self) -> &TrainOptions {
        &self.config.train
    }

    fn batch_maker(&self) -> Box<dyn Fn(usize) -> anyhow::Result<HostBatch> + Send> {
        Box::new(self.batch_maker_inner())
    }

    fn losses(&self, model: &Naosd<B>, batch: &HostBatch, device: &B::Device) -> Losses<B> {
        let w = &self.config.loss;
        let x = batch.to_tensor::<B>(device);
        let z = model.autoencoder.encoder.forward(x.clone());
        let x_hat = model.autoencoder.decoder.forward(z.clone());
        let pixel = l1(x_hat.clone(), x.clone());
        let ssim = multiscale_ssim_loss(x_hat.clone(), x.clone());
        let gradient = gradient_loss(x_hat, x);
        let latent = z.powi_scalar(2).mean();
        let total = pixel.clone().mul_scalar(w.l1)
            + ssim.clone().mul_scalar(w.ms_ssim)
            + gradient.clone().mul_scalar(w.gradient)
            + latent.clone().mul_scalar(w.latent);
        Losses {
            total,
            terms: vec![
                ("l1", pixel),
                ("ms_ssim", ssim),
                ("gradient", gradient),
                ("latent_sq", latent),
            ],
        }
    }

    fn validate(
        &self,
        ema: &<Naosd<B> as AutodiffModule<B>>::InnerModule,
        step: usize,
        out_dir: &Path,
    ) -> anyhow::Result<Vec<(String, f64)>> {
        if self.validation.is_empty() {
            return Ok(Vec::new());
        }
        let device = ema.devices().into_iter().next().expect("a device");
        let (mut psnr, mut ssim) = (0.0, 0.0);
        for (i, hr) in self.validation.iter().enumerate() {
            let x = planars_to_tensor::<B::InnerBackend>(std::slice::from_ref(hr), &device);
            let recon = ema
                .autoencoder
                .decoder
                .forward(ema.autoencoder.encoder.forward(x));
            let recon = tensor_to_planars(recon.clamp(-1.0, 1.0))?.remove(0);
            psnr += psnr_y(&recon, hr, 4);
            ssim += ssim_y(&recon, hr, 4);
            if i == 0 {
                hstack(&[hr, &recon])
                    .to_rgb8()
                    .save(out_dir.join(format!("autoencoder-{step:07}.png")))?;
            }
        }
        let n = self.validation.len() as f64;
        Ok(vec![
            ("val_psnr_y".into(), psnr / n),
            ("val_ssim_y".into(), ssim / n),
        ])
    }
}

/// A randomly initialised model for the stage, seeded.
pub fn init_model<B: Backend>(
    config: &ModelConfig,
    seed: u64,
    device: &B::Device,
) -> anyhow::Result<Naosd<B>> {
    Ok(seeded::<B, _>(device, seed, || config.init::<B>(device))?)
}

/// Runs the whole stage: trains (or resumes), estimates k on the EMA weights, and writes
/// `run_dir/autoencoder.safetensors` (f32) for the NAOSD stage. Returns its path.
///
/// # Errors
/// As [`fit`], plus export errors.
pub fn run<B: Backend>(
    config: AutoencoderConfig,
    run_dir: &Path,
    limits: RunLimits,
    devices: &[B::Device],
) -> anyhow::Result<PathBuf> {
    let device = devices.first().context("no device")?;
    let dataset = ImageFolder::load(&config.data, config.crop)?;
    let (seed, threads) = (config.train.seed, config.train.threads);
    let stage = AutoencoderStage::new(config, dataset)?;
    let model = init_model::<Autodiff<B>>(stage.model_config(), seed, device)?;
    let fitted = on_private_pool(threads, || fit(&stage, model, run_dir, limits, devices))?;
    let mut ema = fitted.ema;
    let k = stage.estimate_latent_scale(&ema, 4, device);
    ema.set_latent_scale(k)?;
    tracing::info!("latent scale k = {k:.5}");
    let out = run_dir.join("autoencoder.safetensors");
    write_atomically(&out, &save_weights(&ema, StoredPrecision::F32)?)?;
    Ok(out)
}

/// [`run`] as a [`BackendTask`] for the CLI.
pub struct RunAutoencoder<'a> {
    pub config: AutoencoderConfig,
    pub run_dir: &'a Path,
    pub limits: RunLimits,
    /// Data-parallel devices ([`crate::train::devices`]).
    pub devices: usize,
}

impl BackendTask for RunAutoencoder<'_> {
    type Output = PathBuf;
    const TRAINS: bool = true;
    fn run<B: Backend>(self, _device: B::Device) -> anyhow::Result<PathBuf> {
        let devices = crate::train::devices::<B>(self.devices)?;
        run::<B>(self.config, self.run_dir, self.limits, &devices)
    }
}
