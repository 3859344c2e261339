//! `trainer-native bench ...`: the measurements behind docs/benchmarks.md. Each part prints a
//! table for people and writes JSON for `scripts/bench.sh`, which composes the report.

use clap::Subcommand;

pub mod flops;
pub mod native;
pub mod parity;
pub mod steps;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Native inference throughput (output MP/s) and peak memory per backend and size.
    Inference(native::InferenceArgs),
    /// FLOPs per output megapixel, counted, and achieved FLOP/s against the measured peak.
    Flops(flops::FlopsArgs),
    /// Write a parity case (weights, input, noise, output) for the PyTorch reference.
    ParityDump(parity::ParityArgs),
    /// Time one stage-1 (NAOSD) training step and one GDPO step at a given batch size.
    Steps(steps::StepsArgs),
}

impl BenchCommand {
    /// # Errors
    /// When the measured work fails.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Inference(args) => native::run(args),
            Self::Flops(args) => flops::run(args),
            Self::ParityDump(args) => parity::run(args),
            Self::Steps(args) => steps::run(args),
        }
    }
}
