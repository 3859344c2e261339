//! `bench inference`: native output megapixels per second and peak memory of the real tiled
//! upscale path (`model::TiledUpscale` with the native CLI's default tile), one size per
//! process so that the process's peak resident memory is the peak of that size.
//!
//! What is timed is exactly what `trainer-native upscale` times: every step launched, read
//! back and assembled on the host. Image decoding and encoding are left out (they are not the
//! model's cost), and the input is synthetic: speed does not depend on the pixels.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;
use burn::tensor::backend::Backend;
use model::{HostImage, ModelConfig, Naosd, NaosdOptions, TileOptions, TiledUpscale};
use serde::Serialize;

use crate::{
    backend::{BackendKind, BackendTask, dispatch},
    export::read_weights,
    memory::read_status_kib,
    upscale::NATIVE_BUFFER_BUDGET,
};

#[derive(clap::Args)]
pub struct InferenceArgs {
    /// Model preset (random weights unless `--weights`: speed does not depend on the values).
    #[arg(long, default_value = "taef2")]
    pub preset: String,
    /// Output size in megapixels (10^6 pixels): the input is the square whose output side is
    /// nearest, on the network's size multiple (so the measured size is close, not exact).
    #[arg(long, default_value_t = 1.0)]
    pub out_mp: f64,
    #[arg(long, default_value_t = 4)]
    pub scale: usize,
    #[arg(long, value_enum, default_value = BackendKind::DEFAULT_CPU)]
    pub backend: BackendKind,
    /// A weight file to time instead of random weights of `--preset`.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Timed runs of the whole image after the warm-up; the fastest is reported.
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// Tile side in input pixels (default: the native `upscale` default, sized for 1 GiB
    /// buffers).
    #[arg(long)]
    pub tile: Option<usize>,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One measured size on one backend (a line of the JSON file).
#[derive(Debug, Clone, Serialize)]
pub struct InferenceResult {
    pub kind: &'static str,
    pub preset: String,
    pub backend: String,
    /// `random init` or the weight file.
    pub weights: String,
    pub scale: usize,
    /// Input and output `[width, height]`.
    pub input: [usize; 2],
    pub output: [usize; 2],
    pub out_mp: f64,
    /// Tile side in input pixels, and the number of tiles.
    pub tile: usize,
    pub tiles: usize,
    /// Output pixels the full-resolution steps compute: every tile's window, halo included
    /// (MP). Above `out_mp` once the image is tiled.
    pub work_mp: f64,
    /// FLOPs of the whole run (`TiledUpscale::work`).
    pub flops: f64,
    /// Untimed warm-up: one whole run (GPU kernels compile and autotune on first use).
    pub warmup_seconds: f64,
    /// Every timed run, then the fastest.
    pub run_seconds: Vec<f64>,
    pub seconds: f64,
    pub mp_per_s: f64,
    pub gflop_per_s: f64,
    /// Process peak resident memory (VmHWM) and resident memory after loading the model,
    /// MiB. On a CPU or a software Vulkan driver (lavapipe) device memory is host memory and
    /// is included; on a discrete GPU it is not.
    pub peak_rss_mib: f64,
    pub rss_after_load_mib: f64,
    pub threads: usize,
    pub memory_note: &'static str,
    /// The layers' convolution algorithm (`model::conv`): `native` or `im2col`.
    pub conv: &'static str,
}

/// # Errors
/// When the backend, the weights or the upscale fail, or the JSON cannot be written.
pub fn run(args: InferenceArgs) -> anyhow::Result<()> {
    if args.weights.is_none() {
        eprintln!(
            "bench inference: no --weights, timing random {} weights (the cost does not \
             depend on the values)",
            args.preset
        );
    }
    let result = dispatch(args.backend, InferenceBench { args: &args })?;
    println!("{}", table_header());
    println!("{}", table_row(&result));
    if let Some(path) = &args.json {
        append_json_line(path, &result)?;
    }
    Ok(())
}

struct InferenceBench<'a> {
    args: &'a InferenceArgs,
}

impl BackendTask for InferenceBench<'_> {
    type Output = InferenceResult;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<InferenceResult> {
        let args = self.args;
        anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
        anyhow::ensure!(
            args.out_mp > 0.0 && args.out_mp.is_finite(),
            "--out-mp must be positive"
        );
        let (model, weights): (Naosd<B>, String) = match &args.weights {
            Some(path) => (
                read_weights::<B>(path, &device)?,
                path.display().to_string(),
            ),
            None => (
                ModelConfig::preset(&args.preset)?.init::<B>(&device)?,
                "random init".into(),
            ),
        };
        let config = model.config().clone();
        let options = NaosdOptions {
            scale: args.scale,
            ..NaosdOptions::default()
        };
        let s = args.scale;
        let tiles = match args.tile {
            Some(tile) => TileOptions { tile },
            None => TileOptions::for_device(&config, s, NATIVE_BUFFER_BUDGET),
        };
        let side = input_side(&config, s, args.out_mp);
        let image = synthetic_image(side, side);
        let rss_after_load_mib = read_status_kib("VmRSS").unwrap_or(0) as f64 / 1024.0;

        let plan = TiledUpscale::new(&config, &image, &options, tiles)?;
        let (work_pixels, flops) = plan.work(&model);

        // Warm-up: one whole untimed run (GPU kernels compile and autotune per shape).
        let started = Instant::now();
        model::upscale_tiled(&model, &image, &options, tiles, &device, |_, _| {})?;
        let warmup_seconds = started.elapsed().as_secs_f64();

        let mut run_seconds = Vec::with_capacity(args.runs);
        for _ in 0..args.runs {
            let started = Instant::now();
            let sr = model::upscale_tiled(&model, &image, &options, tiles, &device, |_, _| {})?;
            run_seconds.push(started.elapsed().as_secs_f64());
            anyhow::ensure!(sr.width == side * s && sr.height == side * s, "output size");
        }
        let seconds = run_seconds.iter().copied().fold(f64::INFINITY, f64::min);
        let (ow, oh) = (side * s, side * s);
        let out_mp = (ow * oh) as f64 / 1e6;
        let peak_rss_mib = read_status_kib("VmHWM").unwrap_or(0) as f64 / 1024.0;
        Ok(InferenceResult {
            kind: "inference",
            preset: config.name.clone(),
            backend: args.backend.name().into(),
            weights,
            scale: s,
            input: [side, side],
            output: [ow, oh],
            out_mp,
            tile: tiles.tile,
            tiles: plan.tiles(),
            work_mp: work_pixels as f64 / 1e6,
            flops: flops as f64,
            warmup_seconds,
            run_seconds,
            seconds,
            mp_per_s: out_mp / seconds,
            gflop_per_s: flops as f64 / 1e9 / seconds,
            peak_rss_mib,
            rss_after_load_mib,
            conv: model::conv::conv_algorithm().name(),
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            memory_note: match args.backend {
                BackendKind::Cuda => "host RSS only: device memory is not included",
                _ => "device memory is host memory here and is included",
            },
        })
    }
}

/// Input side whose output at `scale` is nearest `out_mp` megapixels, on the network's
/// size multiple, so that no size pays for padding.
fn input_side(config: &ModelConfig, scale: usize, out_mp: f64) -> usize {
    let m = config.size_multiple();
    let align = m / gcd(m, scale);
    let side = (out_mp * 1e6).sqrt() / scale as f64;
    ((side / align as f64).round() as usize).max(1) * align
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A smooth, deterministic RGB test image in [-1, 1].
fn synthetic_image(width: usize, height: usize) -> HostImage {
    let n = width * height;
    let data = (0..3 * n)
        .map(|i| {
            let (c, y, x) = (i / n, (i / width) % height, i % width);
            ((x as f32 * 0.11 + c as f32).sin() * (y as f32 * 0.07).cos()) * 0.8
        })
        .collect();
    HostImage {
        channels: 3,
        height,
        width,
        data,
    }
}

/// Appends `value` as one JSON line (the file is JSON Lines: one result per line).
///
/// # Errors
/// When the file cannot be written.
pub fn append_json_line<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(value)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn table_header() -> &'static str {
    "| preset | backend | output | out MP | tiles (work MP) | best s | MP/s | s/MP | GFLOP/s | peak RSS MiB |\n\
     |---|---|---|---:|---:|---:|---:|---:|---:|---:|"
}

fn table_row(r: &InferenceResult) -> String {
    format!(
        "| {} | {} | {}x{} | {:.2} | {} ({:.2}) | {:.2} | {:.3} | {:.2} | {:.1} | {:.0} |",
        r.preset,
        r.backend,
        r.output[0],
        r.output[1],
        r.out_mp,
        r.tiles,
        r.work_mp,
        r.seconds,
        r.mp_per_s,
        1.0 / r.mp_per_s,
        r.gflop_per_s,
        r.peak_rss_mib
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sides_land_on_the_alignment_near_the_requested_size() {
        let base = ModelConfig::taef2();
        // taef2 at x4: outputs on multiples of 32, so input sides on multiples of 8.
        assert_eq!(input_side(&base, 4, 0.25), 128);
        assert_eq!(input_side(&base, 4, 1.0), 248);
        assert_eq!(input_side(&base, 4, 4.0), 504);
    }

    #[test]
    fn status_fields_parse() {
        // Linux only; elsewhere the field is absent and the report says 0.
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(read_status_kib("VmHWM").is_some_and(|k| k > 0));
        }
        assert_eq!(read_status_kib("NoSuchField"), None);
    }
}
