//! Stage 2: GDPO, group direct preference optimisation (method.md sections 4 and 5;
//! docs/gdpo.md).
//!
//! The reference pi_ref is a trained NAOSD weight file, frozen, and is also the sampler. The
//! policy is the reference's UNet with fresh LoRA adapters (zero up-projections, so policy ==
//! reference at step 0); only the adapters train, encoder and decoder are the reference's.
//! One micro-batch, for `batch` LR images:
//!
//! 1. `z_lr = k E(LRup)`, one encoding per LR, repeated `group` times;
//! 2. the reference turns each copy into a sample with its own noise stream (no gradient);
//! 3. the attribute-aware reward of every sample ([`crate::reward`]) and the group-relative
//!    advantages;
//! 4. re-encode the samples, `x0 = k E(x)`, and noise them at `t_add` with a fresh `xi` shared
//!    by policy and reference;
//! 5. per-sample mean denoising errors `e = mean (xi - UNet(x_t, t_diff))^2` of both;
//! 6. the GDPO loss (or the GRPO-style comparison loss) on `(e_theta, e_ref, A)`.
//!
//! The result is merged ([`merge_policy`]): the output weight file has no adapters and costs
//! nothing extra at inference.

pub mod probe;

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use burn::{
    backend::Autodiff,
    module::{AutodiffModule, Module},
    tensor::{
        ElementConversion, Tensor, TensorData,
        backend::{AutodiffBackend, Backend},
    },
};
use model::{
    ColourFix, LoraConfig, LoraTarget, Naosd, NaosdOptions, NoiseSchedule, NoiseSource,
    StoredPrecision, colour, pipeline::conditioned_eps, resample::bicubic_upsample, save_weights,
    unet::UNet,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    backend::BackendTask,
    data::{HostBatch, ImageFolder, item_rng},
    degrade::DegradationConfig,
    export::{read_weights, write_atomically},
    image_io::{hstack, planars_to_tensor, tensor_to_planars},
    loss::gdpo::{gdpo_loss, grpo_loss, implicit_accuracy},
    planar::Planar,
    reward::{
        AttributeRatios, DetailTerms, PsnrY, Reward, RewardMode, attribute_ratios,
        group_advantages, pooled_method_rewards,
    },
    stages::{degraded_crop, degraded_validation},
    train::{Losses, RunLimits, Stage, TrainOptions, fit, latest_ema, on_private_pool},
};

/// Which preference loss trains the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PreferenceLoss {
    /// The paper's group DPO loss (with `group = 2`: Diffusion-DPO).
    #[default]
    Gdpo,
    /// Image-level GRPO-style clipped surrogate (for comparison).
    Grpo,
}

/// Which reward terms count (the paper's ablation, [`RewardMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RewardModeName {
    #[default]
    Full,
    FidelityOnly,
    DetailOnly,
    FixedRho,
}

/// The `[reward]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    #[serde(default)]
    pub mode: RewardModeName,
    /// rho of `mode = "fixed_rho"`.
    #[serde(default = "half")]
    pub fixed_rho: f64,
    /// Round rho_s / rho_d to 2 decimals as the reference code does.
    #[serde(default)]
    pub round_ratios: bool,
    /// Border cropped by the PSNR-Y fidelity term.
    #[serde(default = "four")]
    pub border: usize,
    /// The no-reference terms (`[reward.detail]`).
    #[serde(default)]
    pub detail: DetailTerms,
}

fn half() -> f64 {
    0.5
}
fn four() -> usize {
    4
}

impl RewardConfig {
    pub fn mode(&self) -> RewardMode {
        match self.mode {
            RewardModeName::Full => RewardMode::Full,
            RewardModeName::FidelityOnly => RewardMode::FidelityOnly,
            RewardModeName::DetailOnly => RewardMode::DetailOnly,
            RewardModeName::FixedRho => RewardMode::FixedRho {
                rho: self.fixed_rho,
            },
        }
    }

    /// The reward with its terms loaded.
    ///
    /// # Errors
    /// When a term's file cannot be loaded, or a mode needs detail terms and none is given.
    pub fn build<B: Backend>(&self, device: &B::Device) -> anyhow::Result<Reward> {
        ensure!(
            (0.0..=1.0).contains(&self.fixed_rho),
            "fixed_rho must be in [0, 1]"
        );
        let detail = self.detail.build::<B>(device)?;
        ensure!(
            !detail.is_empty() || self.mode == RewardModeName::FidelityOnly,
            "reward mode {:?} needs a detail term: set `discriminator`, `nss` or `iqa.terms`",
            self.mode
        );
        Ok(Reward {
            mode: self.mode(),
            fidelity: Box::new(PsnrY {
                border: self.border,
            }),
            detail,
        })
    }
}

/// The TOML config of `trainer-native gdpo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GdpoConfig {
    /// The trained NAOSD weight file: the frozen reference, sampler and policy base.
    pub reference: PathBuf,
    /// Where the policy starts instead of the reference: an earlier piece's merged output
    /// (`gdpo.safetensors`, or its `export --trained-part unet`, 8.6 MB f16 for `taef2`),
    /// so that a run continues on a new machine from a small committed file. Fresh adapters
    /// (and optimizer moments) go on top of it; the reference stays what the loss compares to.
    /// Give each piece its own `train.seed`, or it replays the first piece's batches.
    #[serde(default)]
    pub policy_init: Option<PathBuf>,
    pub data: PathBuf,
    /// Held-out images: validation compares policy and reference on them.
    pub validation: Option<PathBuf>,
    /// HR crop side.
    pub crop: usize,
    /// Samples per LR image (G).
    #[serde(default = "default_group")]
    pub group: usize,
    /// omega of the loss.
    #[serde(default = "default_omega")]
    pub omega: f64,
    #[serde(default)]
    pub loss: PreferenceLoss,
    /// PPO clip of the GRPO-style loss.
    #[serde(default = "default_clip")]
    pub grpo_clip: f64,
    #[serde(default = "default_t_add")]
    pub t_add: usize,
    #[serde(default = "default_t_diff")]
    pub t_diff: usize,
    /// Colour fix of the samples the reward sees (the trained network is the same either way).
    #[serde(default)]
    pub colour_fix: ColourFix,
    /// Seeds per validation image and model.
    #[serde(default = "default_validation_seeds")]
    pub validation_seeds: u64,
    /// Noise every sample of a group with the same `xi` in step 4 (common random numbers)
    /// instead of one per sample (method.md). The group contrast `sum_g A_g (e_theta,g -
    /// e_ref,g)` then sees only what differs between the samples: with independent `xi_g`,
    /// how the adapters treat each sample's own noise draw adds a term the preference has
    /// nothing to do with, which swamps it when the samples barely differ (docs/gdpo.md).
    #[serde(default)]
    pub shared_group_noise: bool,
    #[serde(default)]
    pub lora: LoraOptions,
    pub reward: RewardConfig,
    pub train: TrainOptions,
    #[serde(default)]
    pub degradation: DegradationConfig,
}

/// The `[lora]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraOptions {
    pub rank: usize,
    pub alpha: f64,
}

impl Default for LoraOptions {
    fn default() -> Self {
        Self {
            rank: 4,
            alpha: 4.0,
        }
    }
}

impl LoraOptions {
    fn config(&self) -> LoraConfig {
        LoraConfig::new()
            .with_rank(self.rank)
            .with_alpha(self.alpha)
    }
}

fn default_group() -> usize {
    6
}
fn default_omega() -> f64 {
    5000.0
}
fn default_clip() -> f64 {
    0.2
}
fn default_t_add() -> usize {
    250
}
fn default_t_diff() -> usize {
    100
}
fn default_validation_seeds() -> u64 {
    4
}

impl GdpoConfig {
    /// The pipeline options the run samples and validates with (seed 0; callers set seeds).
    pub fn inference_options(&self) -> NaosdOptions {
        NaosdOptions {
            scale: self.degradation.scale,
            t_add: self.t_add,
            t_diff: self.t_diff,
            seed: 0,
            colour_fix: self.colour_fix,
        }
    }

    /// [`Self::inference_options`] without the colour fix: the merge check compares the
    /// networks' raw outputs.
    fn merge_probe_options(&self) -> NaosdOptions {
        NaosdOptions {
            colour_fix: ColourFix::None,
            ..self.inference_options()
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.train.validate()?;
        self.degradation.validate()?;
        ensure!(
            self.group >= 2,
            "group must be at least 2 (G = 2 is Diffusion-DPO)"
        );
        ensure!(
            self.omega > 0.0 && self.omega.is_finite(),
            "omega must be positive"
        );
        ensure!(
            self.grpo_clip > 0.0 && self.grpo_clip < 1.0,
            "grpo_clip must be in (0, 1)"
        );
        ensure!(
            self.t_add < 1000 && self.t_diff < 1000,
            "timesteps must be below 1000"
        );
        ensure!(self.lora.rank > 0, "lora rank must be positive");
        ensure!(
            self.validation_seeds > 0,
            "validation_seeds must be positive"
        );
        let scale = self.degradation.scale;
        ensure!(
            self.crop.is_multiple_of(scale) && self.crop / scale >= 4,
            "crop {} must be a multiple of the scale {scale}",
            self.crop
        );
        Ok(())
    }
}

/// The trainable part: the reference UNet, frozen, with trainable LoRA adapters.
#[derive(Module, Debug)]
pub struct GdpoPolicy<B: Backend> {
    pub unet: UNet<B>,
}

impl<B: Backend> GdpoPolicy<B> {
    /// Policy == reference: the reference's UNet, every base weight frozen, fresh adapters.
    pub fn new(reference: &Naosd<B>, lora: &LoraConfig, device: &B::Device) -> Self {
        Self {
            unet: reference.unet.clone().no_grad().attach_lora(lora, device),
        }
    }
}

/// The reference with the policy's UNet, adapters merged: a plain NAOSD model.
pub fn merge_policy<B: Backend>(reference: &Naosd<B>, policy: &GdpoPolicy<B>) -> Naosd<B> {
    let mut model = reference.clone();
    model.unet = policy.unet.clone().merge_lora();
    model
}

/// The reference with the policy's UNet, adapters kept (what training evaluates).
pub fn unmerged_policy<B: Backend>(reference: &Naosd<B>, policy: &GdpoPolicy<B>) -> Naosd<B> {
    let mut model = reference.clone();
    model.unet = policy.unet.clone();
    model
}

/// A group of samples and the LR latent each was made from (the denoisers' condition).
pub struct Groups<B: Backend> {
    /// `[b * group + g]`: sample g of LR image b.
    pub samples: Tensor<B, 4>,
    /// `z_lr` of each sample's LR image, in the same order.
    pub z_lr: Tensor<B, 4>,
}

/// Steps 1-2: `group` samples per LR image from the frozen reference, consecutive per image
/// (`[b * group + g]`), each with noise stream `noise.first_stream + b * group + g`.
///
/// # Errors
/// Timesteps outside the schedule.
pub fn sample_groups<B: Backend>(
    reference: &Naosd<B>,
    lr: Tensor<B, 4>,
    group: usize,
    options: &NaosdOptions,
    noise: NoiseSource,
) -> model::Result<Groups<B>> {
    let lr_up = bicubic_upsample(lr, options.scale);
    let z_lr = reference.encode(lr_up.clone());
    let repeat = |t: Tensor<B, 4>| {
        let [n, c, h, w] = t.dims();
        t.unsqueeze_dim::<5>(1)
            .repeat_dim(1, group)
            .reshape([n * group, c, h, w])
    };
    let z_lr = repeat(z_lr);
    let z0 = reference.denoise_latent(z_lr.clone(), noise, options.t_add, options.t_diff)?;
    let samples = reference.decode(z0);
    Ok(Groups {
        samples: colour::apply(options.colour_fix, samples, repeat(lr_up)).clamp(-1.0, 1.0),
        z_lr,
    })
}

/// Step 5: per-sample mean squared error of `unet`'s noise prediction (conditioned on the LR
/// latent, [`model::pipeline::conditioned_eps`]), `[n]`.
pub fn denoising_errors<B: Backend>(
    unet: &UNet<B>,
    schedule: &NoiseSchedule,
    x_t: Tensor<B, 4>,
    z_lr: Tensor<B, 4>,
    xi: Tensor<B, 4>,
    t_diff: usize,
) -> Tensor<B, 1> {
    let [n, _, _, _] = x_t.dims();
    let eps_hat = conditioned_eps(unet, schedule, x_t, z_lr, t_diff).expect("t_diff validated");
    (xi - eps_hat)
        .powi_scalar(2)
        .flatten::<2>(1, 3)
        .mean_dim(1)
        .reshape([n])
}

/// HR crops, their degraded LR and their smooth/detail ratios, as host data.
pub struct GdpoBatch {
    pub step: usize,
    pub hr: Vec<Planar>,
    pub lr: HostBatch,
    pub ratios: Vec<AttributeRatios>,
}

/// Where the batches of a run come from: batch `step` is a pure function of these and `step`.
struct BatchSource<'a> {
    dataset: &'a ImageFolder,
    degradation: &'a DegradationConfig,
    crop: usize,
    batch: usize,
    seed: u64,
    round_ratios: bool,
}

impl BatchSource<'_> {
    fn batch(&self, step: usize) -> anyhow::Result<GdpoBatch> {
        let items: Vec<(Planar, Planar, AttributeRatios)> = (0..self.batch)
            .into_par_iter()
            .map(|i| {
                let mut rng = item_rng(self.seed, step as u64, i as u64);
                let (hr, lr) = degraded_crop(self.dataset, self.degradation, self.crop, &mut rng)?;
                let ratios = attribute_ratios(&hr, self.round_ratios);
                Ok((hr, lr, ratios))
            })
            .collect::<anyhow::Result<_>>()?;
        let mut hr = Vec::with_capacity(self.batch);
        let mut lr = Vec::with_capacity(self.batch);
        let mut ratios = Vec::with_capacity(self.batch);
        for (h, l, r) in items {
            hr.push(h);
            lr.push(l);
            ratios.push(r);
        }
        Ok(GdpoBatch {
            step,
            lr: HostBatch::stack(step, &lr),
            hr,
            ratios,
        })
    }
}

/// What one micro-batch measured (for the log and the tests).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStats {
    pub advantages: Vec<Vec<f64>>,
    pub e_theta: Vec<Vec<f64>>,
    pub e_ref: Vec<Vec<f64>>,
}

/// The stage with its data and frozen parts loaded.
pub struct GdpoStage<B: AutodiffBackend> {
    config: GdpoConfig,
    /// The frozen reference, on the inner backend: it never needs gradients, and its passes
    /// (group sampling, re-encoding, its denoising errors) are most of a step's work, which
    /// the autodiff wrapper would otherwise track op by op.
    reference: Naosd<B::InnerBackend>,
    reward: Reward,
    dataset: ImageFolder,
    /// (HR, LR, ratios), degraded with a fixed seed.
    validation: Vec<(Planar, Planar, AttributeRatios)>,
    /// `detail_<term>` names for the log.
    detail_names: Vec<&'static str>,
    /// The reference per device: its own device first, copies for the other devices of a
    /// data-parallel run as they are first asked for.
    replicas: std::sync::Mutex<Vec<(B::Device, Naosd<B::InnerBackend>)>>,
}

const SAMPLE_NOISE: u64 = 0x6764_706f_5341;
const SHARED_NOISE: u64 = 0x6764_706f_5849;

/// The noise the reference samples step `step`'s groups with (`samples` = LR images x group),
/// so that the probe draws exactly the groups a run trains on.
fn sample_noise(config: &GdpoConfig, step: usize, samples: usize) -> NoiseSource {
    NoiseSource {
        seed: config.train.seed ^ SAMPLE_NOISE,
        first_stream: (step * samples) as u64,
    }
}

impl<B: AutodiffBackend> GdpoStage<B> {
    /// # Errors
    /// Bad config values, unreadable data.
    pub fn new(
        config: GdpoConfig,
        reference: Naosd<B>,
        reward: Reward,
        dataset: ImageFolder,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let scale = config.degradation.scale;
        let m = reference.config().size_multiple();
        ensure!(
            config.crop.is_multiple_of(m),
            "crop {} must be a multiple of the model's size multiple {m}",
            config.crop
        );
        let round = config.reward.round_ratios;
        let validation = match &config.validation {
            Some(dir) => degraded_validation(dir, m.max(scale * 4), 128, &config.degradation)?
                .into_iter()
                .map(|(hr, lr)| {
                    let ratios = attribute_ratios(&hr, round);
                    (hr, lr, ratios)
                })
                .collect(),
            None => Vec::new(),
        };
        // Log keys live as long as the process; a handful of short strings.
        let detail_names = reward
            .detail_names()
            .into_iter()
            .map(|n| &*Box::leak(format!("detail_{n}").into_boxed_str()))
            .collect();
        let reference = reference.valid();
        let home = reference.devices().into_iter().next().context("a device")?;
        let replicas = std::sync::Mutex::new(vec![(home, reference.clone())]);
        Ok(Self {
            config,
            reference,
            reward,
            dataset,
            validation,
            detail_names,
            replicas,
        })
    }

    /// The frozen reference on `device` (copied there once, for data-parallel runs).
    fn reference_on(&self, device: &B::Device) -> Naosd<B::InnerBackend> {
        let mut replicas = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, r)) = replicas.iter().find(|(d, _)| d == device) {
            return r.clone();
        }
        let copy = self.reference.clone().fork(device);
        replicas.push((device.clone(), copy.clone()));
        copy
    }

    /// Steps 1-6 on one micro-batch: the loss, its logged terms, and the group statistics.
    ///
    /// # Panics
    /// On timesteps outside the schedule (validated at construction).
    pub fn step_losses(
        &self,
        policy: &GdpoPolicy<B>,
        batch: &GdpoBatch,
        device: &B::Device,
    ) -> (Losses<B>, GroupStats) {
        let cfg = &self.config;
        let (n_lr, group) = (batch.hr.len(), cfg.group);
        let n = n_lr * group;
        let lr = batch.lr.to_tensor::<B::InnerBackend>(device);
        let reference = self.reference_on(device);

        // 1-2. Group generation with the frozen reference.
        let noise = sample_noise(cfg, batch.step, n);
        let Groups { samples, z_lr } =
            sample_groups(&reference, lr, group, &cfg.inference_options(), noise)
                .expect("timesteps validated");

        // 3. Rewards and advantages (host).
        let planars = tensor_to_planars(samples.clone()).expect("3-channel samples");
        let mut scored = self
            .reward
            .score_groups(&planars, &batch.hr, &batch.ratios, group);
        if crate::fault::fires(crate::fault::REWARD_NAN) {
            scored.rewards[0][0] = f64::NAN;
        }
        let advantages: Vec<Vec<f64>> =
            scored.rewards.iter().map(|r| group_advantages(r)).collect();

        // 4. Re-encode, fresh noise shared by both models (and, with `shared_group_noise`, by
        // the samples of a group), noise at t_add.
        let x0 = reference.encode(samples);
        let [_, c, h, w] = x0.dims();
        let draws = if cfg.shared_group_noise { n_lr } else { n };
        let xi = NoiseSource {
            seed: cfg.train.seed ^ SHARED_NOISE,
            first_stream: (batch.step * draws) as u64,
        }
        .tensor::<B::InnerBackend>([draws, c, h, w], device);
        let xi = if cfg.shared_group_noise {
            xi.unsqueeze_dim::<5>(1)
                .expand([n_lr, group, c, h, w])
                .reshape([n, c, h, w])
        } else {
            xi
        };
        let x_t = reference
            .schedule()
            .add_noise(x0, xi.clone(), cfg.t_add)
            .expect("t_add validated");

        // 5. Per-sample denoising errors: the reference's without autodiff, the policy's
        // (whose adapters train) with it, on the same inputs.
        let schedule = reference.schedule();
        let e_ref = denoising_errors(
            &reference.unet,
            schedule,
            x_t.clone(),
            z_lr.clone(),
            xi.clone(),
            cfg.t_diff,
        )
        .reshape([n_lr, group]);
        let e_ref = Tensor::<B, 2>::from_inner(e_ref);
        let e_theta = denoising_errors(
            &policy.unet,
            schedule,
            Tensor::from_inner(x_t),
            Tensor::from_inner(z_lr),
            Tensor::from_inner(xi),
            cfg.t_diff,
        )
        .reshape([n_lr, group]);

        // 6. The preference loss.
        let flat: Vec<f32> = advantages.iter().flatten().map(|&a| a as f32).collect();
        let a = Tensor::<B, 2>::from_data(TensorData::new(flat, [n_lr, group]), device);
        let total = match cfg.loss {
            PreferenceLoss::Gdpo => gdpo_loss(e_theta.clone(), e_ref.clone(), a, cfg.omega),
            PreferenceLoss::Grpo => {
                grpo_loss(e_theta.clone(), e_ref.clone(), a, cfg.omega, cfg.grpo_clip)
            }
        };

        let host = |t: Tensor<B, 2>| -> Vec<Vec<f64>> {
            let v: Vec<f32> = t.into_data().convert::<f32>().to_vec().unwrap_or_default();
            v.chunks(group)
                .map(|c| c.iter().map(|&x| f64::from(x)).collect())
                .collect()
        };
        let stats = GroupStats {
            advantages,
            e_theta: host(e_theta.clone().detach()),
            e_ref: host(e_ref),
        };
        let rewards: Vec<f64> = scored.rewards.iter().flatten().copied().collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let reward_mean = mean(&rewards);
        let reward_std = (rewards
            .iter()
            .map(|r| (r - reward_mean).powi(2))
            .sum::<f64>()
            / rewards.len().max(1) as f64)
            .sqrt();
        let spread = mean(
            &stats
                .advantages
                .iter()
                .map(|a| {
                    a.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                        - a.iter().copied().fold(f64::INFINITY, f64::min)
                })
                .collect::<Vec<_>>(),
        );
        let gap = mean(
            &stats
                .e_theta
                .iter()
                .flatten()
                .zip(stats.e_ref.iter().flatten())
                .map(|(t, r)| (t - r).abs())
                .collect::<Vec<_>>(),
        );
        let scalar = |v: f64| Tensor::<B, 1>::from_floats([v as f32], device);
        let mut terms = vec![
            ("reward_mean", scalar(reward_mean)),
            ("reward_std", scalar(reward_std)),
            ("advantage_spread", scalar(spread)),
            (
                "accuracy",
                scalar(implicit_accuracy(
                    &stats.e_theta,
                    &stats.e_ref,
                    &stats.advantages,
                )),
            ),
            ("e_gap", scalar(gap)),
            ("e_ref", scalar(mean(&stats.e_ref.concat()))),
            ("psnr_y", scalar(mean(&scored.fidelity))),
        ];
        for (name, values) in self.detail_names.iter().zip(&scored.detail) {
            terms.push((name, scalar(mean(values))));
        }
        (Losses { total, terms }, stats)
    }

    /// Upscales `lr` with `model` for each validation seed.
    fn samples_of(
        model: &Naosd<B::InnerBackend>,
        lr: &Planar,
        options: &NaosdOptions,
        seeds: u64,
    ) -> anyhow::Result<Vec<Planar>> {
        let device = model.devices().into_iter().next().context("a device")?;
        let lr_t = planars_to_tensor::<B::InnerBackend>(std::slice::from_ref(lr), &device);
        (0..seeds)
            .map(|seed| {
                let options = NaosdOptions {
                    seed,
                    ..options.clone()
                };
                Ok(tensor_to_planars(model.upscale(lr_t.clone(), &options)?)?.remove(0))
            })
            .collect()
    }
}

impl<B: AutodiffBackend> Stage<B> for GdpoStage<B> {
    type Model = GdpoPolicy<B>;
    type Batch = GdpoBatch;

    fn name(&self) -> &'static str {
        "gdpo"
    }

    fn options(&self) -> &TrainOptions {
        &self.config.train
    }

    fn batch_maker(&self) -> Box<dyn Fn(usize) -> anyhow::Result<GdpoBatch> + Send> {
        let (dataset, crop, batch, seed, round) = (
            self.dataset.clone(),
            self.config.crop,
            self.config.train.batch,
            self.config.train.seed,
            self.config.reward.round_ratios,
        );
        let degradation = self.config.degradation.clone();
        Box::new(move |step| {
            let source = BatchSource {
                dataset: &dataset,
                degradation: &degradation,
                crop,
                batch,
                seed,
                round_ratios: round,
            };
            source.batch(step)
        })
    }

    fn losses(&self, model: &GdpoPolicy<B>, batch: &GdpoBatch, device: &B::Device) -> Losses<B> {
        self.step_losses(model, batch, device).0
    }

    /// Policy (EMA) against reference on the held-out images, `validation_seeds` samples
    /// each: PSNR-Y, every detail term, and the reward with both models' samples pooled into
    /// one group per image (the reward the policy optimises, measured where it never trained).
    fn validate(
        &self,
        ema: &GdpoPolicy<B::InnerBackend>,
        step: usize,
        out_dir: &Path,
    ) -> anyhow::Result<Vec<(String, f64)>> {
        if self.validation.is_empty() {
            return Ok(Vec::new());
        }
        let reference = &self.reference;
        let policy = unmerged_policy(reference, ema);
        let options = self.config.inference_options();
        let seeds = self.config.validation_seeds;
        let mut sums = vec![0.0; 4 + 2 * self.reward.detail.len()];
        for (i, (hr, lr, ratios)) in self.validation.iter().enumerate() {
            let outputs = [
                Self::samples_of(reference, lr, &options, seeds)?,
                Self::samples_of(&policy, lr, &options, seeds)?,
            ];
            let rewards = pooled_method_rewards(&self.reward, hr, *ratios, &outputs);
            sums[0] += rewards[0];
            sums[1] += rewards[1];
            for (m, samples) in outputs.iter().enumerate() {
                let refs = vec![hr.clone(); samples.len()];
                let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
                sums[2 + m] += mean(self.reward.fidelity.score(samples, &refs));
                for (t, term) in self.reward.detail.iter().enumerate() {
                    sums[4 + 2 * t + m] += mean(term.score(samples, &refs));
                }
            }
            if i == 0 {
                hstack(&[&outputs[0][0], &outputs[1][0], hr])
                    .to_rgb8()
                    .save(out_dir.join(format!("gdpo-{step:07}.png")))?;
            }
        }
        let n = self.validation.len() as f64;
        let mut metrics = vec![
            ("val_reward_ref".into(), sums[0] / n),
            ("val_reward_policy".into(), sums[1] / n),
            ("val_psnr_y_ref".into(), sums[2] / n),
            ("val_psnr_y_policy".into(), sums[3] / n),
        ];
        for (t, name) in self.reward.detail_names().iter().enumerate() {
            metrics.push((format!("val_{name}_ref"), sums[4 + 2 * t] / n));
            metrics.push((format!("val_{name}_policy"), sums[5 + 2 * t] / n));
        }
        Ok(metrics)
    }
}

/// Loads the reference and a policy (fresh adapters, seeded).
fn reference_and_policy<B: Backend>(
    config: &GdpoConfig,
    device: &B::Device,
) -> anyhow::Result<(Naosd<B>, GdpoPolicy<B>)> {
    let reference = read_weights::<B>(&config.reference, device)?;
    let base = match &config.policy_init {
        None => reference.clone(),
        Some(path) => {
            let init = read_weights::<B>(path, device)?;
            ensure!(
                init.config() == reference.config(),
                "policy_init {} is another model than the reference {} (config `{}` vs `{}`)",
                path.display(),
                config.reference.display(),
                init.config().name,
                reference.config().name
            );
            init
        }
    };
    let policy = crate::train::seeded::<B, _>(device, config.train.seed, || {
        GdpoPolicy::new(&base, &config.lora.config(), device)
    });
    Ok((reference, policy))
}

/// Writes the merged model after checking it against the unmerged policy on a probe image;
/// returns the largest output difference.
///
/// # Errors
/// When merging changes the output by more than 1e-4, or the file cannot be written.
pub fn write_merged<B: Backend>(
    reference: &Naosd<B>,
    policy: &GdpoPolicy<B>,
    options: &NaosdOptions,
    out: &Path,
) -> anyhow::Result<f32> {
    let merged = merge_policy(reference, policy);
    let device = reference.devices().into_iter().next().context("a device")?;
    let m = reference.config().size_multiple();
    let side = (m / options.scale.max(1)).max(1) * 4;
    let probe = crate::train::seeded::<B, _>(&device, 0x9e0be, || {
        Tensor::<B, 4>::random(
            [1, 3, side, side],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            &device,
        )
    });
    let unmerged = unmerged_policy(reference, policy).upscale(probe.clone(), options)?;
    let diff: f32 = (merged.upscale(probe, options)? - unmerged)
        .abs()
        .max()
        .into_scalar()
        .elem();
    ensure!(
        diff <= 1e-4,
        "merging the adapters changed the output by {diff} (> 1e-4); not written"
    );
    write_atomically(out, &save_weights(&merged, StoredPrecision::F32)?)?;
    Ok(diff)
}

/// Runs the stage (or resumes it), then writes `run_dir/gdpo.safetensors`: the EMA policy,
/// adapters merged (f32).
///
/// # Errors
/// As [`fit`], plus weight-file, reward-term and merge errors.
pub fn run<B: Backend>(
    config: GdpoConfig,
    run_dir: &Path,
    limits: RunLimits,
    devices: &[B::Device],
) -> anyhow::Result<PathBuf> {
    config.validate()?;
    let device = devices.first().context("no device")?;
    let (reference, policy) = reference_and_policy::<Autodiff<B>>(&config, device)?;
    let reward = config.reward.build::<B>(device)?;
    let dataset = ImageFolder::load(&config.data, config.crop)?;
    let threads = config.train.threads;
    let options = config.merge_probe_options();
    let stage = GdpoStage::new(config, reference.clone(), reward, dataset)?;
    let fitted = on_private_pool(threads, || fit(&stage, policy, run_dir, limits, devices))?;
    let out = run_dir.join("gdpo.safetensors");
    let diff = write_merged(&reference.valid(), &fitted.ema, &options, &out)?;
    tracing::info!("gdpo: merged adapters (max output change {diff:e})");
    Ok(out)
}

/// `merge`: the newest checkpoint of a GDPO run, adapters folded in, as a weight file.
pub struct MergeRun<'a> {
    pub config: GdpoConfig,
    pub run_dir: &'a Path,
    pub out: &'a Path,
}

impl BackendTask for MergeRun<'_> {
    /// (step of the checkpoint, largest output change of the merge)
    type Output = (usize, f32);
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<(usize, f32)> {
        let (reference, policy) = reference_and_policy::<B>(&self.config, &device)?;
        let (policy, step) = latest_ema(&self.run_dir.join("checkpoints"), policy, &device)?
            .with_context(|| format!("no checkpoint in {}", self.run_dir.display()))?;
        let options = self.config.merge_probe_options();
        let diff = write_merged(&reference, &policy, &options, self.out)?;
        Ok((step, diff))
    }
}

/// [`run`] as a [`BackendTask`] for the CLI.
pub struct RunGdpo<'a> {
    pub config: GdpoConfig,
    pub run_dir: &'a Path,
    pub limits: RunLimits,
    /// Data-parallel devices ([`crate::train::devices`]).
    pub devices: usize,
}

impl BackendTask for RunGdpo<'_> {
    type Output = PathBuf;
    const TRAINS: bool = true;
    fn run<B: Backend>(self, _device: B::Device) -> anyhow::Result<PathBuf> {
        let devices = crate::train::devices::<B>(self.devices)?;
        run::<B>(self.config, self.run_dir, self.limits, &devices)
    }
}
