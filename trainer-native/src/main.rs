//! `trainer-native`: the CLI of the native side of GDPO-SR. Each subcommand's work lives in
//! the library (`trainer_native::*`); this file only parses arguments and reports.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use model::{ColourFix, NaosdOptions, StoredPrecision, TileOptions};
use trainer_native::{
    backend::{BackendKind, dispatch},
    degrade::{DegradationConfig, degrade_folder},
    eval::{Eval, LrSource},
    export::{DetailRangeWeights, ExportWeb, InitWeights},
    info::{PresetCosts, cost_table},
    read_toml,
    reward::{DetailTerms, NssModel},
    stages::{
        autoencoder::RunAutoencoder,
        gdpo::{MergeRun, RunGdpo, probe::ProbeRun},
        naosd::RunNaosd,
    },
    train::RunLimits,
    upscale::Upscale,
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
    /// Benchmarks (docs/benchmarks.md; `scripts/bench.sh` runs them all).
    #[command(subcommand)]
    Bench(trainer_native::bench::BenchCommand),
    /// Write the starting weight file of a preset: `taef2` = the pretrained TAEF2 autoencoder
    /// (from $GDPO_SR_TAEF2_DIR, default ../shared/weights/taef2) and a UNet that starts at
    /// the bicubic-level output; `tiny` = random weights (tests and smoke runs).
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
    /// Stage 2: GDPO post-training of a NAOSD weight file (LoRA on the UNet, frozen
    /// reference); writes RUN_DIR/gdpo.safetensors (adapters merged).
    Gdpo(StageArgs),
    /// Before GDPO training: sample groups from the config's reference on its training batches
    /// and report how the reward's terms spread within groups against between images, and how
    /// often two shifted views of the samples rank them alike (docs/gdpo.md).
    GdpoProbe {
        /// The GDPO run's config (reference, data, group size, reward).
        #[arg(long)]
        config: PathBuf,
        /// Training batches to sample (`batch` LR crops each, `group` samples per crop).
        #[arg(long, default_value_t = 8)]
        batches: usize,
        /// Pixels dropped at the top-left of one view and at the bottom-right of the other.
        #[arg(long, default_value_t = 8)]
        shift: usize,
        #[arg(long, value_enum, default_value = BackendKind::DEFAULT_CPU)]
        backend: BackendKind,
    },
    /// Fold the LoRA adapters of a GDPO run's newest checkpoint into a plain weight file
    /// (checked: the merged output equals the unmerged policy's within 1e-4).
    Merge {
        /// The run's GDPO config.
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        run_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = BackendKind::DEFAULT_CPU)]
        backend: BackendKind,
    },
    /// Fit the natural-scene-statistics model of the GDPO detail reward on pristine images.
    FitNss {
        /// Folder of HR images (searched recursively).
        #[arg(long)]
        data: PathBuf,
        /// Patch side in pixels (even, >= 8; at most the side of the images it will score).
        #[arg(long, default_value_t = 32)]
        patch: usize,
        /// Use at most this many images.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        out: PathBuf,
    },
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
    /// Convert a weight file (e.g. a stage's f32 output) to the f16 web weight file; a trained
    /// part (the committed UNet) is composed with the pretrained TAEF2 on the way.
    Export {
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Write only the parameters under this module path (`unet`): what is committed of a
        /// model on a pretrained autoencoder that must not be redistributed.
        #[arg(long)]
        trained_part: Option<String>,
        /// Of a file with a detail range, write the one model at this point (0 = fidelity
        /// end, 1 = detail end) instead of the range.
        #[arg(long)]
        detail: Option<f32>,
    },
    /// Make a detail range of two trainings of one model (a fidelity and a perceptual piece):
    /// one f16 file holding both, used at any point `low + detail * (high - low)` of the way
    /// between them (the page's, the npm package's and `upscale`'s detail knob; network
    /// interpolation, ESRGAN). Written as the inputs are (a trained part stays one).
    Range {
        /// The fidelity end (detail 0).
        #[arg(long)]
        low: PathBuf,
        /// The detail end (detail 1; same config as LOW).
        #[arg(long)]
        high: PathBuf,
        /// The point used unless the user picks one.
        #[arg(long)]
        default: f32,
        #[arg(long)]
        out: PathBuf,
    },
    /// The quality table of bicubic, Lanczos, other upscalers' saved outputs and weight files
    /// on HR images (LR by antialiased bicubic, by the seeded Real-ESRGAN degradation, or real
    /// LR/HR pairs): PSNR-Y, SSIM-Y, MS-SSIM, GMSD, HaarPSI, optionally NIQE and BRISQUE and
    /// the GDPO reward's terms (docs/quality.md).
    Eval {
        /// Folder of HR images (searched recursively).
        #[arg(long)]
        hr: PathBuf,
        /// Folder of real LR images paired with the HR by file name (instead of synthesising).
        #[arg(long)]
        lr: Option<PathBuf>,
        /// Synthesise the LR with the Real-ESRGAN degradation (this TOML config, or the
        /// defaults with `--degrade default`) instead of antialiased bicubic.
        #[arg(long)]
        degrade: Option<String>,
        /// A model row: NAME=WEIGHTS or just WEIGHTS (repeatable).
        #[arg(long = "weights")]
        models: Vec<String>,
        /// A row of another upscaler's outputs: NAME=FOLDER, one image per HR, same stem, HR
        /// size (repeatable; e.g. the peers of scripts/quality.sh, run on `--save-lr`'s LR).
        #[arg(long = "sr", value_name = "NAME=FOLDER")]
        precomputed: Vec<String>,
        /// Report the standard NIQE and BRISQUE, and the HR images' own (models from this
        /// folder, SHA-256 checked; `--standard-iqa` alone: ../shared/iqa).
        #[arg(long, value_name = "DIR", num_args = 0..=1,
              default_missing_value = trainer_native::iqa::DEFAULT_DIR)]
        standard_iqa: Option<PathBuf>,
        /// Write the LR inputs here (`<stem>.png`, 8-bit, exactly what every row sees).
        #[arg(long, value_name = "DIR")]
        save_lr: Option<PathBuf>,
        /// Write, per image, the same crop of the HR and of every row side by side
        /// (`DIR/<stem>.png`; the crop is the most detailed window of the HR).
        #[arg(long, value_name = "DIR")]
        crops: Option<PathBuf>,
        /// Side of those crops in HR pixels.
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
        crop_side: u32,
        /// (`--seed` also seeds the degradation.)
        #[command(flatten)]
        inference: InferenceArgs,
        /// Pixels cropped at each border before measuring.
        #[arg(long, default_value_t = 4)]
        border: usize,
        /// Use at most this many images.
        #[arg(long)]
        limit: Option<usize>,
        /// Also write the table (Markdown) here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Report the discriminator realism term (a NAOSD run's discriminator.bin) and the
        /// pooled GDPO reward.
        #[arg(long)]
        discriminator: Option<PathBuf>,
        /// Channels of that discriminator, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
        discriminator_channels: Vec<usize>,
        /// Report the NSS naturalness term (a `fit-nss` model) and the pooled GDPO reward.
        #[arg(long)]
        nss: Option<PathBuf>,
        /// Add NIQE / BRISQUE as GDPO reward terms (comma-separated: niqe, brisque): negated
        /// columns and the pooled reward, from ../shared/iqa. For the metrics themselves, with
        /// the HR's own, use `--standard-iqa`.
        #[arg(long, value_delimiter = ',')]
        iqa: Vec<trainer_native::reward::IqaTermName>,
        /// Pool bicubic with the models for the reward (by default, with two or more models,
        /// only the models are pooled: bicubic's extremes would squeeze their rewards together).
        #[arg(long)]
        reward_with_bicubic: bool,
        #[arg(long, value_enum, default_value = BackendKind::DEFAULT_CPU)]
        backend: BackendKind,
    },
    /// Upscale an image file, or every image of a folder, with a weight file (tiled like the
    /// browser: same weights, seed and tile size give the same output).
    Upscale {
        /// The model (default: the shipped one, the committed UNet composed with the
        /// pretrained TAEF2; run from the repository root).
        #[arg(long, default_value = "weights/taef2-unet.safetensors")]
        weights: PathBuf,
        /// An image file, or a folder (searched recursively).
        #[arg(long)]
        input: PathBuf,
        /// The output file, or folder (PNG files with the inputs' relative names).
        #[arg(long)]
        output: PathBuf,
        /// Tile side in input pixels (default: sized for 1 GiB buffers). Changes speed and
        /// memory, not the output.
        #[arg(long)]
        tile: Option<usize>,
        /// Also write the exact f32 output (`rgb`, [3, H, W] in [0, 1]) as safetensors.
        #[arg(long)]
        tensor_out: Option<PathBuf>,
        /// Run once untimed before the timed run (benchmarks: GPU kernels compile on first use).
        #[arg(long)]
        warmup: bool,
        /// Where in the weights' detail range to run: 0 = the fidelity end, 1 = the most
        /// generated detail (default: the file's own default; the shipped 0.35).
        #[arg(long)]
        detail: Option<f32>,
        #[command(flatten)]
        inference: InferenceArgs,
        #[arg(long, value_enum, default_value = BackendKind::DEFAULT_CPU)]
        backend: BackendKind,
    },
}

/// The one-step pipeline's options (upscale, eval).
#[derive(clap::Args)]
struct InferenceArgs {
    #[arg(long, default_value_t = 4)]
    scale: usize,
    /// Seed of the injected noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Noise-addition timestep: higher gives more generated detail, lower more fidelity.
    #[arg(long, default_value_t = 250)]
    t_add: usize,
    #[arg(long, default_value_t = 100)]
    t_diff: usize,
    /// Colour correction of the output towards the bicubic input.
    #[arg(long, value_enum, default_value = "none")]
    colour_fix: ColourFixArg,
}

impl InferenceArgs {
    fn options(&self) -> NaosdOptions {
        NaosdOptions {
            scale: self.scale,
            seed: self.seed,
            t_add: self.t_add,
            t_diff: self.t_diff,
            colour_fix: self.colour_fix.into(),
        }
    }
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
    /// Stop with a checkpoint after the first step that ends SECONDS after training started
    /// (e.g. a GPU lent for a fixed time); `--resume` continues on the same schedule.
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<f64>,
    #[arg(long, value_enum, default_value = BackendKind::DEFAULT_CPU)]
    backend: BackendKind,
    /// Train data-parallel on this many devices of the backend (CUDA 0..N); micro-batches
    /// (`accumulate` in the config) are spread over them, one optimizer step for all.
    #[arg(long, default_value_t = 1)]
    devices: usize,
}

impl StageArgs {
    /// The data-parallel device count, refused where the backend cannot move tensors between
    /// devices (cubecl 0.10's wgpu runtime does not implement device-to-device copies).
    fn devices(&self) -> anyhow::Result<usize> {
        if self.devices > 1 && self.backend == BackendKind::Wgpu {
            anyhow::bail!(
                "--devices {} needs a backend that copies tensors between devices: cuda (or cpu, \
                 where the replicas share the one CPU); burn 0.21's wgpu runtime cannot",
                self.devices
            );
        }
        Ok(self.devices)
    }

    fn limits(&self) -> RunLimits {
        RunLimits {
            resume: self.resume,
            stop_after: self.stop_after,
            time_limit: self.time_limit.map(std::time::Duration::from_secs_f64),
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
    let _faults = trainer_native::fault::from_env();
    match Cli::parse().command {
        Command::Bench(bench) => bench.run()?,
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
                "wrote {} ({size} bytes, initial {preset} weights)",
                out.display()
            );
        }
        Command::Autoencoder(args) => {
            let task = RunAutoencoder {
                config: read_toml(&args.config)?,
                run_dir: &args.run_dir,
                limits: args.limits(),
                devices: args.devices()?,
            };
            println!("wrote {}", dispatch(args.backend, task)?.display());
        }
        Command::Naosd(args) => {
            let task = RunNaosd {
                config: read_toml(&args.config)?,
                run_dir: &args.run_dir,
                limits: args.limits(),
                devices: args.devices()?,
            };
            println!("wrote {}", dispatch(args.backend, task)?.display());
        }
        Command::Gdpo(args) => {
            let task = RunGdpo {
                config: read_toml(&args.config)?,
                run_dir: &args.run_dir,
                limits: args.limits(),
                devices: args.devices()?,
            };
            println!("wrote {}", dispatch(args.backend, task)?.display());
        }
        Command::GdpoProbe {
            config,
            batches,
            shift,
            backend,
        } => {
            let config = read_toml(&config)?;
            let task = ProbeRun {
                config: &config,
                batches,
                shift,
            };
            print!("{}", dispatch(backend, task)?.to_markdown());
        }
        Command::Merge {
            config,
            run_dir,
            out,
            backend,
        } => {
            let task = MergeRun {
                config: read_toml(&config)?,
                run_dir: &run_dir,
                out: &out,
            };
            let (step, diff) = dispatch(backend, task)?;
            println!(
                "wrote {} (step {step}, adapters merged; max output change {diff:e})",
                out.display()
            );
        }
        Command::FitNss {
            data,
            patch,
            limit,
            out,
        } => {
            let model = NssModel::fit_folder(&data, patch, limit)?;
            trainer_native::export::write_atomically(&out, &model.to_json())?;
            println!(
                "wrote {} ({} sharp {patch}x{patch} patches)",
                out.display(),
                model.patches
            );
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
        Command::Export {
            weights,
            out,
            trained_part,
            detail,
        } => {
            let size = dispatch(
                BackendKind::Cpu,
                ExportWeb {
                    weights: &weights,
                    out: &out,
                    trained_part: trained_part.as_deref(),
                    detail,
                },
            )?;
            println!("wrote {} ({size} bytes, f16)", out.display());
        }
        Command::Range {
            low,
            high,
            default,
            out,
        } => {
            let size = dispatch(
                BackendKind::Cpu,
                DetailRangeWeights {
                    low: &low,
                    high: &high,
                    default,
                    out: &out,
                },
            )?;
            println!(
                "wrote {} ({size} bytes, f16: detail 0 = {}, 1 = {}, default {default})",
                out.display(),
                low.display(),
                high.display()
            );
        }
        Command::Eval {
            hr,
            lr,
            degrade,
            models,
            inference,
            border,
            limit,
            out,
            backend,
            discriminator,
            discriminator_channels,
            nss,
            iqa,
            reward_with_bicubic,
            precomputed,
            standard_iqa,
            save_lr,
            crops,
            crop_side,
        } => {
            let lr_source = match (lr, degrade) {
                (Some(_), Some(_)) => anyhow::bail!("--lr and --degrade exclude each other"),
                (Some(dir), None) => LrSource::Folder(dir),
                (None, Some(cfg)) => {
                    let config: DegradationConfig = if cfg == "default" {
                        DegradationConfig::default()
                    } else {
                        read_toml(std::path::Path::new(&cfg))?
                    };
                    config.validate()?;
                    LrSource::Degraded {
                        config: Box::new(config),
                        seed: inference.seed,
                    }
                }
                (None, None) => LrSource::Bicubic,
            };
            let precomputed = precomputed
                .iter()
                .map(|m| match m.split_once('=') {
                    Some((name, dir)) if !name.is_empty() => {
                        Ok((name.to_string(), PathBuf::from(dir)))
                    }
                    _ => Err(anyhow::anyhow!("--sr {m}: expected NAME=FOLDER")),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let models = models
                .iter()
                .map(|m| match m.split_once('=') {
                    Some((name, path)) => (name.to_string(), PathBuf::from(path)),
                    None => (
                        std::path::Path::new(m)
                            .file_stem()
                            .map_or_else(|| m.clone(), |s| s.to_string_lossy().into_owned()),
                        PathBuf::from(m),
                    ),
                })
                .collect();
            let report = dispatch(
                backend,
                Eval {
                    hr: &hr,
                    lr: lr_source,
                    models,
                    precomputed,
                    options: inference.options(),
                    border,
                    limit,
                    detail: DetailTerms {
                        discriminator,
                        discriminator_channels,
                        nss,
                        iqa: trainer_native::reward::IqaTerms {
                            terms: iqa,
                            ..Default::default()
                        },
                    },
                    reward_with_bicubic,
                    standard_iqa,
                    save_lr,
                    crops: crops.map(|dir| trainer_native::eval::Crops {
                        dir,
                        side: crop_side as usize,
                    }),
                },
            )?;
            let table = report.markdown(&format!("x{} on {}", inference.scale, hr.display()));
            print!("{table}");
            if let Some(path) = out {
                trainer_native::export::write_atomically(&path, table.as_bytes())?;
            }
        }
        Command::Upscale {
            weights,
            input,
            output,
            inference,
            backend,
            tile,
            tensor_out,
            warmup,
            detail,
        } => {
            let options = inference.options();
            let tiles = tile.map(|tile| TileOptions { tile });
            let written = dispatch(
                backend,
                Upscale {
                    weights: &weights,
                    input: &input,
                    output: &output,
                    options,
                    tiles,
                    tensor_out: tensor_out.as_deref(),
                    warmup,
                    detail,
                },
            )?;
            for (_, out, w, h, seconds) in written {
                let mp = (w * h) as f64 / 1e6;
                println!(
                    "wrote {} ({w}x{h}; inference {seconds:.3} s, {:.3} s per output MP)",
                    out.display(),
                    seconds / mp
                );
            }
            if let Some(mib) = trainer_native::memory::peak_resident_mib() {
                println!("peak memory {mib:.0} MiB");
            }
        }
    }
    Ok(())
}
