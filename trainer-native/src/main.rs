//! `trainer-native`: the CLI of the native side of GDPO-SR. Each subcommand's work lives in
//! the library (`trainer_native::*`); this file only parses arguments and reports.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use model::{ColourFix, NaosdOptions, StoredPrecision};
use trainer_native::{
    backend::{BackendKind, dispatch},
    degrade::{DegradationConfig, degrade_folder},
    export::{ExportWeb, InitWeights},
    info::{PresetCosts, cost_table},
    read_toml,
    stages::{autoencoder::RunAutoencoder, naosd::RunNaosd},
    train::RunLimits,
    upscale::UpscaleFile,
};

#[derive(Parser)]
#[command(version, about = "GDPO-SR native trainer and tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parameter counts and FLOPs per output megapixel of the presets.
    Info,
    /// Write a randomly initialised weight file (tests and smoke runs; not a trained model).
    Init {
        #[arg(long, default_value = "tiny")]
        preset: String,
        #[arg(long)]
        out: PathBuf,
        /// Store f32 (exact) instead of f16 (half the size).
        #[arg(long)]
        f32: bool,
    },
    /// Stage 1a: train the autoencoder (E, D) from a TOML config; writes
    /// RUN_DIR/autoencoder.safetensors.
    Autoencoder(StageArgs),
    /// Stage 1b: train the NAOSD one-step generator from the stage-1a weights; writes
    /// RUN_DIR/naosd.safetensors.
    Naosd(StageArgs),
    /// Write degraded LR/HR pairs (Real-ESRGAN second order) of a folder, to look at.
    Degrade {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// TOML degradation config (defaults: method.md section 3).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// HR centre-crop side.
        #[arg(long, default_value_t = 256)]
        crop: usize,
        /// Pairs to write at most.
        #[arg(long, default_value_t = 16)]
        count: usize,
    },
    /// Convert a weight file (e.g. a stage's f32 output) to the f16 web weight file.
    Export {
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Upscale one image with a weight file.
    Upscale {
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, default_value_t = 4)]
        scale: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Noise-addition timestep: higher gives more generated detail, lower more fidelity.
        #[arg(long, default_value_t = 250)]
        t_add: usize,
        #[arg(long, default_value_t = 100)]
        t_diff: usize,
        #[arg(long, value_enum, default_value = "none")]
        colour_fix: ColourFixArg,
        #[arg(long, value_enum, default_value = "cpu")]
        backend: BackendKind,
    },
}

/// Arguments every training stage takes.
#[derive(clap::Args)]
struct StageArgs {
    /// The stage's TOML config.
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    run_dir: PathBuf,
    /// Continue from the newest intact checkpoint in RUN_DIR.
    #[arg(long)]
    resume: bool,
    /// Stop with a checkpoint after this many steps (resume later on the same schedule).
    #[arg(long)]
    stop_after: Option<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendKind,
}

impl StageArgs {
    fn limits(&self) -> RunLimits {
        RunLimits {
            resume: self.resume,
            stop_after: self.stop_after,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ColourFixArg {
    None,
    Adain,
    Wavelet,
}

impl From<ColourFixArg> for ColourFix {
    fn from(a: ColourFixArg) -> Self {
        match a {
            ColourFixArg::None => ColourFix::None,
            ColourFixArg::Adain => ColourFix::Adain,
            ColourFixArg::Wavelet => ColourFix::Wavelet,
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Info => print!("{}", cost_table(&dispatch(BackendKind::Cpu, PresetCosts)?)),
        Command::Init { preset, out, f32 } => {
            let precision = if f32 {
                StoredPrecision::F32
            } else {
                StoredPrecision::F16
            };
            let size = dispatch(
                BackendKind::Cpu,
                InitWeights {
                    preset: &preset,
                    out: &out,
                    precision,
                },
            )?;
            println!(
                "wrote {} ({size} bytes, random {preset} weights)",
                out.display()
            );
        }
        Command::Autoencoder(args) => {
            let task = RunAutoencoder {
                config: read_toml(&args.config)?,
                run_dir: &args.run_dir,
                limits: args.limits(),
            };
            println!("wrote {}", dispatch(args.backend, task)?.display());
        }
        Command::Naosd(args) => {
            let task = RunNaosd {
                config: read_toml(&args.config)?,
                run_dir: &args.run_dir,
                limits: args.limits(),
            };
            println!("wrote {}", dispatch(args.backend, task)?.display());
        }
        Command::Degrade {
            input,
            output,
            config,
            seed,
            crop,
            count,
        } => {
            let config = match config {
                Some(path) => read_toml(&path)?,
                None => DegradationConfig::default(),
            };
            std::fs::create_dir_all(&output)
                .with_context(|| format!("cannot create {}", output.display()))?;
            let written = degrade_folder(&input, &output, &config, seed, crop, count)?;
            println!("wrote {written} LR/HR pairs to {}", output.display());
        }
        Command::Export { weights, out } => {
            let size = dispatch(
                BackendKind::Cpu,
                ExportWeb {
                    weights: &weights,
                    out: &out,
                },
            )?;
            println!("wrote {} ({size} bytes, f16)", out.display());
        }
        Command::Upscale {
            weights,
            input,
            output,
            scale,
            seed,
            t_add,
            t_diff,
            colour_fix,
            backend,
        } => {
            let options = NaosdOptions {
                scale,
                seed,
                t_add,
                t_diff,
                colour_fix: colour_fix.into(),
            };
            let (w, h) = dispatch(
                backend,
                UpscaleFile {
                    weights: &weights,
                    input: &input,
                    output: &output,
                    options,
                },
            )?;
            println!("wrote {} ({w}x{h})", output.display());
        }
    }
    Ok(())
}
