//! `trainer-native bench steps`: the time of one training step of each stage, as the trainer
//! runs it, and the parts it is made of, for the comparison with the PyTorch reference
//! (`tests/pytorch/bench_torch.py`, same JSON schema).
//!
//! - NAOSD (stage 1b): the stage's own `Stage::losses` (the inference path, L1 + MS-SSIM +
//!   Sobel + latent MSE + the hinge GAN with its discriminator), backward, the stage's
//!   clipping and AdamW: `fit`'s optimizer step with one micro-batch. The weight EMA and the
//!   log line are not part of it.
//! - GDPO: `GdpoStage::step_losses` (group sampling by the frozen reference, reward,
//!   re-encoding, both denoising errors, the GDPO loss), backward, clipping, AdamW on the
//!   adapters. The reward is the fidelity term (PSNR-Y) only: the detail terms need trained
//!   files (a discriminator, an NSS model) and are host-side work outside the comparison.
//! - One-step inference (`Naosd::upscale`, untiled, colour fix none) at the given LR sizes.
//!
//! Batches come from the stages' own batch makers on a synthetic in-memory image (made once,
//! outside the timing: the trainer prepares them on a loader thread). Weights are random with
//! non-zero residual branches ([`super::parity::randomise_all`]). Every timed region ends with
//! a device sync; the result is the median of `--repeats` runs after `--warmup` runs.

use std::{path::PathBuf, time::Instant};

use anyhow::Context;
use burn::{
    backend::Autodiff,
    module::{AutodiffModule, Module},
    nn::GroupNormConfig,
    optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer},
    tensor::{
        Distribution, ElementConversion, Tensor, activation,
        backend::{AutodiffBackend, Backend},
    },
};
use model::{
    ColourFix, LoraConfig, ModelConfig, Naosd, NaosdOptions, NoiseSource, conv::conv2d_layer,
    resample::bicubic_upsample,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    backend::{BackendKind, BackendTask, dispatch},
    data::ImageFolder,
    degrade::DegradationConfig,
    image_io::tensor_to_planars,
    loss::discriminator::DiscriminatorConfig,
    reward::{DetailTerms, PsnrY, Reward, RewardMode, group_advantages},
    stages::{
        gdpo::{
            GdpoBatch, GdpoConfig, GdpoPolicy, GdpoStage, LoraOptions, PreferenceLoss,
            RewardConfig, RewardModeName, denoising_errors, sample_groups,
        },
        naosd::{NaosdBatch, NaosdConfig, NaosdGan, NaosdLoss, NaosdStage},
    },
    train::{Stage, TrainOptions, on_private_pool, seeded},
};

use super::parity::randomise_all;

#[derive(clap::Args, Clone)]
pub struct StepsArgs {
    #[arg(long, default_value = "taef2")]
    pub preset: String,
    /// NAOSD step: HR crops per step.
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// NAOSD step: HR crop side.
    #[arg(long, default_value_t = 256)]
    pub crop: usize,
    /// GDPO step: LR images per step (each sampled `--group` times).
    #[arg(long, default_value_t = 1)]
    pub gdpo_batch: usize,
    /// GDPO step: HR crop side (a multiple of the preset's size multiple).
    #[arg(long, default_value_t = 128)]
    pub gdpo_crop: usize,
    /// GDPO group size G.
    #[arg(long, default_value_t = 6)]
    pub group: usize,
    /// Widths of the NAOSD discriminator (as the removed `base` config; bench_torch.py too).
    #[arg(long, value_delimiter = ',', default_value = "64,128,256")]
    pub disc_channels: Vec<usize>,
    /// LR sizes `HxW` of the inference timings (x4).
    #[arg(long, value_delimiter = ',', default_value = "128x128,256x256,512x512")]
    pub inputs: Vec<String>,
    /// LR size of the per-part inference timings.
    #[arg(long, default_value = "256x256")]
    pub breakdown_input: String,
    #[arg(long, value_enum, default_value = BackendKind::DEFAULT_CPU)]
    pub backend: BackendKind,
    /// Compute threads of the CPU backend (0: one per core, as training runs).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Parts to leave out: inference, steps, breakdown, ops.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Output JSON file.
    #[arg(long)]
    pub json: PathBuf,
}

impl StepsArgs {
    fn runs(&self, part: &str) -> bool {
        !self.skip.iter().any(|s| s == part)
    }
}

/// One measured step (the `steps` entries of the JSON).
#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    pub kind: &'static str,
    pub preset: String,
    pub batch: usize,
    pub crop: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<usize>,
    pub seconds: f64,
    pub backend: String,
}

/// # Errors
/// Bad sizes, or a failing backend.
pub fn run(args: StepsArgs) -> anyhow::Result<()> {
    let threads = args.threads;
    let backend = args.backend;
    let report = on_private_pool(threads, || dispatch(backend, Measure(args.clone())))?;
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    eprintln!("wrote {}", args.json.display());
    Ok(())
}

struct Measure(StepsArgs);

impl BackendTask for Measure {
    type Output = Value;
    const TRAINS: bool = true;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Value> {
        measure::<B>(&self.0, &device)
    }
}

/// Median seconds of `repeats` runs of `f` after `warmup` runs; `f` syncs the device itself.
fn median_seconds(warmup: usize, repeats: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// [`median_seconds`] of `f` followed by a device sync (lazy backends really run it).
fn synced_median<B: Backend>(
    warmup: usize,
    repeats: usize,
    device: &B::Device,
    f: &dyn Fn(),
) -> f64 {
    median_seconds(warmup, repeats, || {
        f();
        sync::<B>(device);
    })
}

fn sync<B: Backend>(device: &B::Device) {
    B::sync(device).expect("device sync");
}

fn parse_size(text: &str) -> anyhow::Result<(usize, usize)> {
    let (h, w) = text
        .split_once('x')
        .with_context(|| format!("size `{text}` is not HxW"))?;
    Ok((h.trim().parse()?, w.trim().parse()?))
}

/// A deterministic RGB image to crop training pairs from (the stages' batch makers need a
/// dataset; its content does not change the cost of a step).
fn synthetic_dataset(side: usize) -> ImageFolder {
    let side = side as u32;
    ImageFolder::from_images(vec![image::RgbImage::from_fn(side, side, |x, y| {
        let checker = if (x / 5 + y / 7) % 2 == 0 { 60 } else { 0 };
        image::Rgb([
            (x * 191 / side) as u8 + checker,
            (y * 191 / side) as u8 + checker,
            ((x * 3 + y * 5) % 190) as u8,
        ])
    })])
}

fn train_options(batch: usize, lr: f64) -> TrainOptions {
    TrainOptions {
        steps: 1000,
        batch,
        accumulate: 1,
        lr,
        warmup_steps: 0,
        weight_decay: 0.01,
        grad_clip: 1.0,
        ema_decay: 0.999,
        seed: 0,
        checkpoint_every: 1000,
        validate_every: 1000,
        keep_checkpoints: 1,
        prefetch: 1,
        threads: 0,
    }
}

fn random_model<B: Backend>(
    config: &ModelConfig,
    seed: u64,
    device: &B::Device,
) -> anyhow::Result<Naosd<B>> {
    seeded::<B, _>(device, seed, || -> anyhow::Result<_> {
        Ok(randomise_all(config.init::<B>(device)?))
    })
}

/// Times of the three phases of an optimizer step, each ending in a sync.
#[derive(Debug, Default, Clone, Serialize)]
struct PhaseTimes {
    forward: f64,
    backward: f64,
    optimizer: f64,
}

fn median_phases(samples: &[PhaseTimes]) -> PhaseTimes {
    let median = |f: fn(&PhaseTimes) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    PhaseTimes {
        forward: median(|p| p.forward),
        backward: median(|p| p.backward),
        optimizer: median(|p| p.optimizer),
    }
}

/// One optimizer step as `train::fit` makes it with one micro-batch and one device: the
/// stage's losses, backward, the logged terms read back, the accumulator, the stage's
/// clipping, AdamW. Returns the updated model and the phase times.
fn optimizer_step<B, S, O>(
    stage: &S,
    model: S::Model,
    optimizer: &mut O,
    batch: &S::Batch,
    device: &B::Device,
    lr: f64,
) -> (S::Model, PhaseTimes)
where
    B: AutodiffBackend,
    S: Stage<B>,
    O: Optimizer<S::Model, B>,
{
    let start = Instant::now();
    let losses = stage.losses(&model, batch, device);
    sync::<B>(device);
    let forward = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let grads = GradientsParams::from_grads(losses.total.clone().backward(), &model);
    let logged: f64 = losses
        .terms
        .into_iter()
        .map(|(_, t)| f64::from(t.into_scalar().elem::<f32>()))
        .sum::<f64>()
        + f64::from(losses.total.into_scalar().elem::<f32>());
    sync::<B>(device);
    let backward = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut accumulator = GradientsAccumulator::<S::Model>::new();
    accumulator.accumulate(&model, grads);
    let (grads, norm) = stage.clip(&model, accumulator.grads(), 1.0);
    assert!(
        logged.is_finite() && norm.is_finite(),
        "non-finite loss or gradient"
    );
    let model = optimizer.step(lr, model, grads);
    sync::<B>(device);
    let optimise = start.elapsed().as_secs_f64();
    (
        model,
        PhaseTimes {
            forward,
            backward,
            optimizer: optimise,
        },
    )
}

/// Runs `warmup + repeats` optimizer steps; the step time is the median of the sums.
fn time_steps<B, S, O>(
    args: &StepsArgs,
    stage: &S,
    mut model: S::Model,
    mut optimizer: O,
    batch: &S::Batch,
    device: &B::Device,
    lr: f64,
) -> (f64, PhaseTimes)
where
    B: AutodiffBackend,
    S: Stage<B>,
    O: Optimizer<S::Model, B>,
{
    let mut samples = Vec::new();
    for i in 0..args.warmup + args.repeats.max(1) {
        let (next, phases) = optimizer_step(stage, model, &mut optimizer, batch, device, lr);
        model = next;
        if i >= args.warmup {
            samples.push(phases);
        }
    }
    let mut totals: Vec<f64> = samples
        .iter()
        .map(|p| p.forward + p.backward + p.optimizer)
        .collect();
    totals.sort_by(f64::total_cmp);
    (totals[totals.len() / 2], median_phases(&samples))
}

fn measure<B: Backend>(args: &StepsArgs, device: &B::Device) -> anyhow::Result<Value> {
    type Ad<B> = Autodiff<B>;
    let config = ModelConfig::preset(&args.preset)?;
    let backend = format!("{:?}", args.backend).to_lowercase();
    let threads = rayon::current_num_threads();
    eprintln!(
        "bench steps: {} on {} ({threads} CPU threads)",
        args.preset,
        B::name(device)
    );
    let mut report = json!({
        "backend": backend,
        "device": B::name(device),
        "threads": threads,
        "conv": model::conv::conv_algorithm().name(),
        "inference": [],
        "steps": [],
        "breakdown": {},
    });
    let options = NaosdOptions {
        colour_fix: ColourFix::None,
        ..Default::default()
    };

    if args.runs("inference") || args.runs("breakdown") {
        let model = random_model::<B>(&config, 0, device)?;
        if args.runs("inference") {
            let mut entries = Vec::new();
            for size in &args.inputs {
                let (h, w) = parse_size(size)?;
                let lr =
                    Tensor::<B, 4>::random([1, 3, h, w], Distribution::Uniform(-1.0, 1.0), device);
                let seconds = synced_median::<B>(args.warmup, args.repeats, device, &|| {
                    let _sr = model.upscale(lr.clone(), &options).expect("valid options");
                });
                let out_mp = (h * w * options.scale * options.scale) as f64 / 1e6;
                eprintln!("inference {h}x{w} -> {out_mp:.2} MP: {seconds:.3} s");
                entries.push(
                    json!({"preset": args.preset, "input": [h, w], "out_mp": out_mp,
                    "seconds": seconds, "tiled": false, "backend": backend}),
                );
            }
            report["inference"] = Value::Array(entries);
        }
        if args.runs("breakdown") {
            let (h, w) = parse_size(&args.breakdown_input)?;
            let parts = inference_parts(&model, (h, w), &options, args, device);
            eprintln!("inference parts: {parts}");
            report["breakdown"]["inference_parts"] =
                json!({"preset": args.preset, "input": [h, w], "seconds": parts});
        }
    }

    if args.runs("steps") {
        // NAOSD: the generator and discriminator of `naosd::run`, from random weights.
        let disc = DiscriminatorConfig {
            channels: args.disc_channels.clone(),
        };
        let mut generator = random_model::<Ad<B>>(&config, 1, device)?;
        generator.autoencoder.decoder = generator.autoencoder.decoder.no_grad();
        let target_encoder = generator.autoencoder.encoder.clone().no_grad();
        let discriminator = seeded::<Ad<B>, _>(device, 1, || disc.init::<Ad<B>>(device));
        let naosd_config = NaosdConfig {
            init: PathBuf::new(),
            data: PathBuf::new(),
            validation: None,
            crop: args.crop,
            train_encoder: true,
            bicubic_fraction: 0.0,
            validation_bicubic: false,
            validation_side: 256,
            t_add: options.t_add,
            t_diff: options.t_diff,
            train: train_options(args.batch, 5e-5),
            loss: NaosdLoss::default(),
            degradation: DegradationConfig::default(),
            discriminator: disc,
        };
        let stage = NaosdStage::new(naosd_config, &config, synthetic_dataset(args.crop * 2))?;
        let batch: NaosdBatch = <NaosdStage as Stage<Ad<B>>>::batch_maker(&stage)(0)?;
        let model = NaosdGan {
            generator,
            discriminator,
            target_encoder,
        };
        let optimizer = adamw::<Ad<B>, NaosdGan<Ad<B>>>();
        let (seconds, phases) = time_steps(args, &stage, model, optimizer, &batch, device, 5e-5);
        eprintln!(
            "naosd step b{} c{}: {seconds:.3} s ({phases:?})",
            args.batch, args.crop
        );
        push_step(
            &mut report,
            StepTiming {
                kind: "naosd",
                preset: args.preset.clone(),
                batch: args.batch,
                crop: args.crop,
                group: None,
                seconds,
                backend: backend.clone(),
            },
        );
        report["breakdown"]["naosd_step_parts"] = serde_json::to_value(&phases)?;

        // GDPO: reference and policy of `gdpo::run`, fidelity-only reward.
        let reference = random_model::<Ad<B>>(&config, 2, device)?;
        let lora = LoraOptions::default();
        let policy = seeded::<Ad<B>, _>(device, 3, || {
            GdpoPolicy::new(
                &reference,
                &LoraConfig::new()
                    .with_rank(lora.rank)
                    .with_alpha(lora.alpha),
                device,
            )
        });
        let gdpo_config = GdpoConfig {
            policy_init: None,
            reference: PathBuf::new(),
            data: PathBuf::new(),
            validation: None,
            crop: args.gdpo_crop,
            group: args.group,
            omega: 5000.0,
            loss: PreferenceLoss::Gdpo,
            grpo_clip: 0.2,
            t_add: options.t_add,
            t_diff: options.t_diff,
            colour_fix: ColourFix::None,
            validation_seeds: 1,
            shared_group_noise: false,
            lora,
            reward: RewardConfig {
                mode: RewardModeName::FidelityOnly,
                fixed_rho: 0.5,
                round_ratios: false,
                border: 4,
                detail: DetailTerms::default(),
            },
            train: train_options(args.gdpo_batch, 1e-4),
            degradation: DegradationConfig::default(),
        };
        let reward = fidelity_reward();
        let stage = GdpoStage::new(
            gdpo_config,
            reference.clone(),
            reward,
            synthetic_dataset(args.gdpo_crop * 2),
        )?;
        let batch: GdpoBatch = <GdpoStage<Ad<B>> as Stage<Ad<B>>>::batch_maker(&stage)(0)?;
        if args.runs("breakdown") {
            let parts = gdpo_forward_parts(&reference.valid(), &policy, &batch, args, device);
            eprintln!("gdpo forward parts: {parts}");
            report["breakdown"]["gdpo_forward_parts"] = parts;
        }
        let optimizer = adamw::<Ad<B>, GdpoPolicy<Ad<B>>>();
        let (seconds, phases) = time_steps(args, &stage, policy, optimizer, &batch, device, 1e-4);
        eprintln!(
            "gdpo step b{} G{} c{}: {seconds:.3} s ({phases:?})",
            args.gdpo_batch, args.group, args.gdpo_crop
        );
        push_step(
            &mut report,
            StepTiming {
                kind: "gdpo",
                preset: args.preset.clone(),
                batch: args.gdpo_batch,
                crop: args.gdpo_crop,
                group: Some(args.group),
                seconds,
                backend: backend.clone(),
            },
        );
        report["breakdown"]["gdpo_step_parts"] = serde_json::to_value(&phases)?;
    }

    if args.runs("ops") {
        let ops = op_benchmarks::<B>(args, device);
        eprintln!("ops: {ops}");
        report["breakdown"]["ops"] = ops;
    }
    Ok(report)
}

fn push_step(report: &mut Value, step: StepTiming) {
    if let Some(steps) = report["steps"].as_array_mut() {
        steps.push(serde_json::to_value(step).expect("plain data"));
    }
}

/// `fit`'s optimizer.
fn adamw<B: AutodiffBackend, M: AutodiffModule<B>>() -> impl Optimizer<M, B> {
    AdamWConfig::new()
        .with_weight_decay(0.01)
        .with_epsilon(1e-8)
        .init::<B, M>()
}

fn fidelity_reward() -> Reward {
    Reward {
        mode: RewardMode::FidelityOnly,
        fidelity: Box::new(PsnrY { border: 4 }),
        detail: Vec::new(),
    }
}

/// Each part of `Naosd::upscale` on its own: bicubic, encoder, noise, UNet, decoder.
fn inference_parts<B: Backend>(
    model: &Naosd<B>,
    (h, w): (usize, usize),
    options: &NaosdOptions,
    args: &StepsArgs,
    device: &B::Device,
) -> Value {
    let lr = Tensor::<B, 4>::random([1, 3, h, w], Distribution::Uniform(-1.0, 1.0), device);
    let lr_up = bicubic_upsample(lr.clone(), options.scale);
    let z = model.encode(lr_up.clone());
    let source = NoiseSource {
        seed: 0,
        first_stream: 0,
    };
    let (warmup, repeats) = (args.warmup, args.repeats);
    let time = |f: &dyn Fn()| synced_median::<B>(warmup, repeats, device, f);
    json!({
        "bicubic": time(&|| drop(bicubic_upsample(lr.clone(), options.scale))),
        "encoder": time(&|| drop(model.encode(lr_up.clone()))),
        "noise": time(&|| drop(source.tensor::<B>(z.dims(), device))),
        "unet": time(&|| drop(model.eps_prediction(z.clone(), z.clone(), options.t_diff))),
        "decoder": time(&|| drop(model.decode(z.clone()))),
    })
}

/// The pieces of `GdpoStage::step_losses`, each on its own, through the same public functions:
/// group sampling by the reference, reward (host), re-encoding with the shared noise, both
/// denoising errors (the policy's with autodiff).
fn gdpo_forward_parts<B: Backend>(
    reference: &Naosd<B>,
    policy: &GdpoPolicy<Autodiff<B>>,
    batch: &GdpoBatch,
    args: &StepsArgs,
    device: &B::Device,
) -> Value {
    let group = args.group;
    let options = NaosdOptions::default();
    let noise = |seed| NoiseSource {
        seed,
        first_stream: 0,
    };
    let lr = batch.lr.to_tensor::<B>(device);
    let reward = fidelity_reward();
    let sample = || sample_groups(reference, lr.clone(), group, &options, noise(1)).expect("valid");
    let groups = sample();
    let (samples, z_lr) = (groups.samples, groups.z_lr);
    let ad_z_lr = Tensor::<Autodiff<B>, 4>::from_inner(z_lr.clone());
    let x0 = reference.encode(samples.clone());
    let xi = noise(2).tensor::<B>(x0.dims(), device);
    let x_t = reference
        .schedule()
        .add_noise(x0, xi.clone(), options.t_add)
        .expect("valid");
    let ad_x_t = Tensor::<Autodiff<B>, 4>::from_inner(x_t.clone());
    let ad_xi = Tensor::<Autodiff<B>, 4>::from_inner(xi.clone());
    let (warmup, repeats) = (args.warmup, args.repeats);
    let time = |f: &dyn Fn()| synced_median::<B>(warmup, repeats, device, f);
    json!({
        "sample": time(&|| drop(sample())),
        "reward": time(&|| {
            let planars = tensor_to_planars(samples.clone()).expect("3 channels");
            let scored = reward.score_groups(&planars, &batch.hr, &batch.ratios, group);
            let _advantages: Vec<Vec<f64>> =
                scored.rewards.iter().map(|r| group_advantages(r)).collect();
        }),
        "reencode": time(&|| {
            let x0 = reference.encode(samples.clone());
            let xi = noise(2).tensor::<B>(x0.dims(), device);
            drop(reference.schedule().add_noise(x0, xi, options.t_add));
        }),
        "errors": time(&|| {
            let schedule = reference.schedule();
            drop(denoising_errors(
                &reference.unet,
                schedule,
                x_t.clone(),
                z_lr.clone(),
                xi.clone(),
                options.t_diff,
            ));
            drop(denoising_errors(
                &policy.unet,
                schedule,
                ad_x_t.clone(),
                ad_z_lr.clone(),
                ad_xi.clone(),
                options.t_diff,
            ));
        }),
    })
}

/// Single ops at the removed `base` preset's shapes for 1 MP of output (batch 1), forward and
/// forward + backward: the list `bench_torch.py` measures on PyTorch.
fn op_benchmarks<B: Backend>(args: &StepsArgs, device: &B::Device) -> Value {
    let (warmup, repeats) = (args.warmup, args.repeats.max(5));
    let mut ops = serde_json::Map::new();
    let time = |f: &dyn Fn()| synced_median::<B>(warmup, repeats, device, f);
    for (name, c, side) in [
        ("conv3x3_c128_128x128", 128, 128),
        ("conv3x3_c64_256x256", 64, 256),
        ("conv3x3_c256_32x32", 256, 32),
    ] {
        let x = Tensor::<B, 4>::random([1, c, side, side], Distribution::Normal(0.0, 1.0), device);
        let std = 1.0 / ((c * 9) as f64).sqrt();
        let w = Tensor::<B, 4>::random([c, c, 3, 3], Distribution::Normal(0.0, std), device);
        let b = Tensor::<B, 1>::zeros([c], device);
        // The model layers' convolution (`model::conv`): the algorithm this process uses.
        let forward = time(&|| drop(conv2d_layer(x.clone(), w.clone(), Some(b.clone()), 1, 1)));
        // Backward with the gradient of the input only, of the weight only, and of both:
        // burn derives them as a transposed convolution and as a convolution of the input
        // by the output gradient (batch and channels swapped), two different kernels.
        let fwd_bwd = |input_grad: bool, weight_grad: bool| {
            time(&|| {
                let mut xg = Tensor::<Autodiff<B>, 4>::from_inner(x.clone());
                let mut wg = Tensor::<Autodiff<B>, 4>::from_inner(w.clone());
                if input_grad {
                    xg = xg.require_grad();
                }
                if weight_grad {
                    wg = wg.require_grad();
                }
                let bg = Tensor::<Autodiff<B>, 1>::from_inner(b.clone());
                drop(conv2d_layer(xg, wg, Some(bg), 1, 1).sum().backward());
            })
        };
        ops.insert(format!("{name}_fwd_bwd_input"), json!(fwd_bwd(true, false)));
        ops.insert(
            format!("{name}_fwd_bwd_weight"),
            json!(fwd_bwd(false, true)),
        );
        let fwd_bwd = fwd_bwd(true, true);
        ops.insert(name.into(), json!(forward));
        ops.insert(format!("{name}_fwd_bwd"), json!(fwd_bwd));
    }
    let x = Tensor::<B, 4>::random([1, 128, 128, 128], Distribution::Normal(0.0, 1.0), device);
    let norm = GroupNormConfig::new(16, 128).init::<B>(device);
    ops.insert(
        "group_norm_silu_c128_128x128".into(),
        json!(time(&|| drop(activation::silu(norm.forward(x.clone()))))),
    );
    let qkv = || Tensor::<B, 4>::random([1, 4, 1024, 64], Distribution::Normal(0.0, 1.0), device);
    let (q, k, v) = (qkv(), qkv(), qkv());
    ops.insert(
        "attention_4x1024x64".into(),
        json!(time(&|| {
            let scores = q
                .clone()
                .matmul(k.clone().swap_dims(2, 3))
                .mul_scalar(0.125);
            drop(activation::softmax(scores, 3).matmul(v.clone()));
        })),
    );
    Value::Object(ops)
}
