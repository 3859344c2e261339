//! `trainer-native`: the CLI of the native side of GDPO-SR. Each subcommand's work lives in
//! the library (`trainer_native::*`); this file only parses arguments and reports.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use model::{ColourFix, NaosdOptions, StoredPrecision};
use trainer_native::{
    backend::{BackendKind, dispatch},
    export::InitWeights,
    info::{PresetCosts, cost_table},
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
