//! `bench flops`: the FLOPs per output megapixel of a preset, counted layer by layer from the
//! weights' shapes (the count `trainer-native info` prints), and the peak FLOP/s this backend
//! reaches on this machine: the best of several large f32 matrix products and 3x3
//! convolutions through burn, the same kernels the model runs. `bench inference` reports the
//! FLOP/s a run achieved; the report divides one by the other.

use std::{path::PathBuf, time::Instant};

use burn::tensor::{Distribution, Tensor, backend::Backend, module::conv2d, ops::ConvOptions};
use model::ModelConfig;
use serde::Serialize;

use super::native::append_json_line;
use crate::backend::{BackendKind, BackendTask, dispatch};

#[derive(clap::Args)]
pub struct FlopsArgs {
    #[arg(long, default_value = "taef2")]
    pub preset: String,
    #[arg(long, value_enum, default_value = BackendKind::DEFAULT_CPU)]
    pub backend: BackendKind,
    /// Side of the square f32 matrix product of the peak measurement.
    #[arg(long, default_value_t = 2048)]
    pub matmul: usize,
    /// Side of the feature map of the peak 3x3 convolution (256 -> 256 channels).
    #[arg(long, default_value_t = 64)]
    pub conv: usize,
    /// Timed repetitions of each; the fastest counts.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Only count FLOPs (no device work).
    #[arg(long)]
    pub count_only: bool,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// GFLOPs per output MP at one output tile side, whole and by part.
#[derive(Debug, Clone, Serialize)]
pub struct CountedFlops {
    pub tile_side: usize,
    pub gflops_per_output_mp: f64,
    pub encoder: f64,
    pub unet: f64,
    pub decoder: f64,
}

/// The best FLOP/s of one kernel.
#[derive(Debug, Clone, Serialize)]
pub struct PeakKernel {
    pub what: String,
    pub flops: f64,
    pub best_seconds: f64,
    pub gflop_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlopsResult {
    pub kind: &'static str,
    pub preset: String,
    pub backend: String,
    /// 2 FLOPs per multiply-add; norms and activations ~10 FLOPs per element (see
    /// `docs/architecture.md`).
    pub counted: Vec<CountedFlops>,
    /// Empty with `--count-only`.
    pub peak: Vec<PeakKernel>,
    /// The best of `peak`.
    pub peak_gflop_per_s: Option<f64>,
    pub threads: usize,
}

/// # Errors
/// When the backend fails or the JSON cannot be written.
pub fn run(args: FlopsArgs) -> anyhow::Result<()> {
    let result = dispatch(args.backend, FlopsBench { args: &args })?;
    println!(
        "{} FLOPs per output MP (counted from the weights' shapes, 2 per multiply-add):",
        result.preset
    );
    println!("| output tile | GFLOPs/MP | encoder | UNet | decoder |\n|---|---:|---:|---:|---:|");
    for c in &result.counted {
        println!(
            "| {0}x{0} | {1:.1} | {2:.1} | {3:.1} | {4:.1} |",
            c.tile_side, c.gflops_per_output_mp, c.encoder, c.unet, c.decoder
        );
    }
    if !result.peak.is_empty() {
        println!("\npeak f32 FLOP/s through burn on {}:", result.backend);
        println!("| kernel | GFLOP | best s | GFLOP/s |\n|---|---:|---:|---:|");
        for p in &result.peak {
            println!(
                "| {} | {:.2} | {:.4} | {:.1} |",
                p.what,
                p.flops / 1e9,
                p.best_seconds,
                p.gflop_per_s
            );
        }
    }
    if let Some(path) = &args.json {
        append_json_line(path, &result)?;
    }
    Ok(())
}

struct FlopsBench<'a> {
    args: &'a FlopsArgs,
}

impl BackendTask for FlopsBench<'_> {
    type Output = FlopsResult;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<FlopsResult> {
        let args = self.args;
        let config = ModelConfig::preset(&args.preset)?;
        let model = config.init::<B>(&device)?;
        let f = config.downsample_factor();
        // 512: the unit of docs/architecture.md; 1024: the native default output tile
        // (self-attention grows with the tile's token count, so the cost per MP does too).
        let counted = [512, 1024]
            .into_iter()
            .map(|side| {
                let mp = (side * side) as f64 / 1e6;
                let ae = &model.autoencoder;
                let parts = [
                    ae.encoder.flops(side, side),
                    model.unet.flops(side / f, side / f),
                    ae.decoder.flops(side / f, side / f),
                ]
                .map(|x| x as f64 / 1e9 / mp);
                CountedFlops {
                    tile_side: side,
                    gflops_per_output_mp: parts.iter().sum(),
                    encoder: parts[0],
                    unet: parts[1],
                    decoder: parts[2],
                }
            })
            .collect();
        let peak = if args.count_only {
            Vec::new()
        } else {
            anyhow::ensure!(args.repeats > 0, "--repeats must be at least 1");
            vec![
                peak_matmul::<B>(args.matmul, args.repeats, &device)?,
                peak_conv::<B>(args.conv, args.repeats, &device)?,
            ]
        };
        Ok(FlopsResult {
            kind: "flops",
            preset: config.name.clone(),
            backend: args.backend.name().into(),
            counted,
            peak_gflop_per_s: peak.iter().map(|p| p.gflop_per_s).reduce(f64::max),
            peak,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
        })
    }
}

/// Runs `op` once to warm up (GPU kernels compile and autotune on first use), then
/// `repeats` times; each run ends with a device sync and a one-value read back, so that
/// lazy backends really execute it. Returns the fastest run's seconds.
fn best_of<B: Backend, const D: usize>(
    repeats: usize,
    device: &B::Device,
    op: impl Fn() -> Tensor<B, D>,
) -> anyhow::Result<f64> {
    let run = || -> anyhow::Result<f64> {
        let started = Instant::now();
        let out = op();
        let one = out.flatten::<1>(0, D - 1).narrow(0, 0, 1);
        one.into_data();
        B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
        Ok(started.elapsed().as_secs_f64())
    };
    run()?;
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        best = best.min(run()?);
    }
    Ok(best)
}

fn peak_matmul<B: Backend>(
    n: usize,
    repeats: usize,
    device: &B::Device,
) -> anyhow::Result<PeakKernel> {
    let a = Tensor::<B, 2>::random([n, n], Distribution::Uniform(-1.0, 1.0), device);
    let b = Tensor::<B, 2>::random([n, n], Distribution::Uniform(-1.0, 1.0), device);
    let seconds = best_of(repeats, device, || a.clone().matmul(b.clone()))?;
    let flops = 2.0 * (n as f64).powi(3);
    Ok(PeakKernel {
        what: format!("matmul {n}x{n} @ {n}x{n}"),
        flops,
        best_seconds: seconds,
        gflop_per_s: flops / seconds / 1e9,
    })
}

/// A 3x3, 256 -> 256 channel convolution: the shape of the UNet's and decoder's widest
/// layers.
fn peak_conv<B: Backend>(
    side: usize,
    repeats: usize,
    device: &B::Device,
) -> anyhow::Result<PeakKernel> {
    const CHANNELS: usize = 256;
    let x = Tensor::<B, 4>::random(
        [1, CHANNELS, side, side],
        Distribution::Uniform(-1.0, 1.0),
        device,
    );
    let w = Tensor::<B, 4>::random(
        [CHANNELS, CHANNELS, 3, 3],
        Distribution::Uniform(-0.1, 0.1),
        device,
    );
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let seconds = best_of(repeats, device, || {
        conv2d(x.clone(), w.clone(), None, options.clone())
    })?;
    let flops = 2.0 * (CHANNELS * CHANNELS * 9 * side * side) as f64;
    Ok(PeakKernel {
        what: format!("conv 3x3 {CHANNELS}->{CHANNELS} on {side}x{side}"),
        flops,
        best_seconds: seconds,
        gflop_per_s: flops / seconds / 1e9,
    })
}
