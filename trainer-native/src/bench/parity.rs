//! `trainer-native bench parity-dump`: one parity case for the PyTorch reference
//! (`tests/pytorch/parity.py`). A folder with
//! - `weights.safetensors`: the weights that ran, f32 (a loaded f16 file is written back as the
//!   f32 values burn computed with, so both sides start from identical numbers);
//! - `case.safetensors`: the LR input, `LRup`, the noise actually injected, `z_lr`, the noisy
//!   latent, `eps_hat`, `z0` and the final SR output (untiled, colour fix none), all f32, with
//!   the pipeline options as JSON under the metadata key `gdpo_sr_parity`.
//!
//! Without `--weights` the preset is initialised randomly *including* the residual branches:
//! the model zero-initialises them (a fresh network is a stack of identities), which would
//! make most of the network trivially equal on any implementation.

use std::{collections::HashMap, path::PathBuf};

use anyhow::Context;
use burn::{
    module::{Module, ModuleMapper, Param},
    tensor::{Distribution, Tensor, backend::Backend},
};
use model::{
    ModelConfig, Naosd, NaosdOptions, NoiseSource, StoredPrecision, resample::bicubic_upsample,
    save_weights,
};
use safetensors::{Dtype, tensor::TensorView};
use serde::Serialize;

use crate::{
    backend::{BackendKind, BackendTask, dispatch},
    export::{read_weights, write_atomically},
    train::seeded,
};

/// Metadata key of `case.safetensors`.
pub const CASE_KEY: &str = "gdpo_sr_parity";

#[derive(clap::Args)]
pub struct ParityArgs {
    /// Preset to initialise randomly (ignored with `--weights`).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// A weight file to use instead of random weights.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Output folder (created).
    #[arg(long)]
    pub out: PathBuf,
    /// LR height; `scale * height` must be a multiple of the preset's size multiple.
    #[arg(long, default_value_t = 32)]
    pub height: usize,
    /// LR width; as `--height`.
    #[arg(long, default_value_t = 48)]
    pub width: usize,
    /// LR images in the batch (element `b` reads noise stream `b`).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 4)]
    pub scale: usize,
    /// Seed of the injected noise (the seed of the pipeline).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Seed of the random weights and of the LR input.
    #[arg(long, default_value_t = 1234)]
    pub init_seed: u64,
    /// Backend to run burn on (parity is specified for the f32 CPU backend).
    #[arg(long, value_enum, default_value = BackendKind::DEFAULT_CPU)]
    pub backend: BackendKind,
}

/// What `case.safetensors` declares besides its tensors.
#[derive(Debug, Clone, Serialize)]
pub struct CaseHeader {
    pub preset: String,
    pub weights: String,
    pub scale: usize,
    pub t_add: usize,
    pub t_diff: usize,
    pub seed: u64,
    pub first_stream: u64,
    pub colour_fix: String,
    pub tiled: bool,
    /// Fraction of SR values at the clamp (a check that the output is not trivially saturated).
    pub clamped_fraction: f64,
    pub backend: String,
}

/// # Errors
/// Bad sizes or presets, unreadable weights, unwritable output.
pub fn run(args: ParityArgs) -> anyhow::Result<()> {
    let backend = args.backend;
    let header = dispatch(backend, ParityDump(args))?;
    eprintln!(
        "parity case: preset {}, {:.1} % of SR values clamped",
        header.preset,
        100.0 * header.clamped_fraction
    );
    Ok(())
}

struct ParityDump(ParityArgs);

impl BackendTask for ParityDump {
    type Output = CaseHeader;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<CaseHeader> {
        let args = self.0;
        let model: Naosd<B> = match &args.weights {
            Some(path) => read_weights::<B>(path, &device)?,
            None => {
                let config = ModelConfig::preset(&args.preset)?;
                seeded::<B, _>(&device, args.init_seed, || -> anyhow::Result<_> {
                    Ok(randomise_all(config.init::<B>(&device)?))
                })?
            }
        };
        let m = model.config().size_multiple();
        anyhow::ensure!(
            args.batch > 0
                && args.height > 0
                && args.width > 0
                && (args.scale * args.height).is_multiple_of(m)
                && (args.scale * args.width).is_multiple_of(m),
            "scale x LR size must be a non-empty multiple of {m} (no padding in a parity case)"
        );
        let lr = seeded::<B, _>(&device, args.init_seed ^ 0x1a, || {
            Tensor::<B, 4>::random(
                [args.batch, 3, args.height, args.width],
                Distribution::Uniform(-1.0, 1.0),
                &device,
            )
        });
        let options = NaosdOptions {
            scale: args.scale,
            seed: args.seed,
            ..Default::default()
        };

        // The pipeline's public steps, in the order `Naosd::upscale` runs them.
        let lr_up = bicubic_upsample(lr.clone(), options.scale);
        let z_lr = model.encode(lr_up.clone());
        let source = NoiseSource {
            seed: options.seed,
            first_stream: 0,
        };
        let noise = source.tensor::<B>(z_lr.dims(), &device);
        let schedule = model.schedule();
        let z_noisy = schedule.add_noise(z_lr.clone(), noise.clone(), options.t_add)?;
        let eps_hat = model.eps_prediction(z_noisy.clone(), z_lr.clone(), options.t_diff)?;
        let z0 = schedule.x0_from_eps(z_noisy.clone(), eps_hat.clone(), options.t_diff)?;
        let sr = model.decode(z0.clone());

        // The dump must be what inference computes, not a re-derivation of it.
        let whole = model.upscale(lr.clone(), &options)?;
        let deviation: f32 = host(whole)?
            .iter()
            .zip(host(sr.clone())?)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        anyhow::ensure!(
            deviation == 0.0,
            "the composed steps differ from Naosd::upscale by {deviation}"
        );

        let sr_values = host(sr.clone())?;
        let clamped = sr_values.iter().filter(|v| v.abs() >= 1.0).count();
        let header = CaseHeader {
            preset: model.config().name.clone(),
            weights: "weights.safetensors".into(),
            scale: options.scale,
            t_add: options.t_add,
            t_diff: options.t_diff,
            seed: options.seed,
            first_stream: source.first_stream,
            colour_fix: "none".into(),
            tiled: false,
            clamped_fraction: clamped as f64 / sr_values.len() as f64,
            backend: B::name(&device),
        };

        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        write_atomically(
            &args.out.join("weights.safetensors"),
            &save_weights(&model, StoredPrecision::F32)?,
        )?;
        let tensors = [
            ("lr", lr),
            ("lr_up", lr_up),
            ("noise", noise),
            ("z_lr", z_lr),
            ("z_noisy", z_noisy),
            ("eps_hat", eps_hat),
            ("z0", z0),
            ("sr", sr),
        ];
        let mut encoded = Vec::with_capacity(tensors.len());
        for (name, t) in tensors {
            let shape = t.dims().to_vec();
            let bytes: Vec<u8> = host(t)?.iter().flat_map(|v| v.to_le_bytes()).collect();
            encoded.push((name, shape, bytes));
        }
        let views = encoded
            .iter()
            .map(|(name, shape, bytes)| {
                Ok((*name, TensorView::new(Dtype::F32, shape.clone(), bytes)?))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        let metadata = HashMap::from([(CASE_KEY.to_string(), serde_json::to_string(&header)?)]);
        write_atomically(
            &args.out.join("case.safetensors"),
            &safetensors::serialize(views, Some(metadata))?,
        )?;
        Ok(header)
    }
}

fn host<B: Backend>(t: Tensor<B, 4>) -> anyhow::Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// Adds Gaussian noise to every parameter, so that no layer is an identity or a zero: weights
/// get `N(0, 1 / fan_in)` (unit gain, so activations stay O(1) through the depth), vectors
/// (biases, norm scales and shifts) `N(0, 0.1^2)`.
pub fn randomise_all<B: Backend, M: Module<B>>(module: M) -> M {
    struct Perturb;
    impl<B: Backend> ModuleMapper<B> for Perturb {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, t, mapper) = param.consume();
            let dims = t.dims();
            // Convolutions are [out, in, kh, kw]; linear layers store [in, out].
            let fan_in = match D {
                4 => dims[1] * dims[2] * dims[3],
                2 => dims[0],
                _ => 0,
            };
            let std = if fan_in > 0 {
                1.0 / (fan_in as f64).sqrt()
            } else {
                0.1
            };
            let noise = Tensor::random(t.shape(), Distribution::Normal(0.0, std), &t.device());
            Param::from_mapped_value(id, t + noise, mapper)
        }
    }
    module.map(&mut Perturb)
}
