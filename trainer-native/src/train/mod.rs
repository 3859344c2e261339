//! The training loop shared by every stage: gradient accumulation, global-norm clipping,
//! AdamW with a warmup + cosine schedule, an EMA of the weights, crash-safe checkpoints with
//! exact resume, a JSON-lines log, a progress bar, periodic validation, and a hard stop on a
//! non-finite loss (naming the step; the last good checkpoint stays).
//!
//! A stage supplies what differs: its module, how a batch is made from `(seed, step)` (on a
//! background thread), its losses and its validation.

pub mod checkpoint;
pub mod optim;

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{BufWriter, Write},
    path::Path,
    time::Instant,
};

use anyhow::{Context, bail};
use burn::{
    module::{AutodiffModule, Module},
    optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer},
    record::{BinBytesRecorder, FullPrecisionSettings, Recorder},
    tensor::{ElementConversion, Tensor, backend::AutodiffBackend},
};
use serde::{Deserialize, Serialize};

use crate::data::Prefetcher;
use checkpoint::CheckpointStore;
pub use optim::clip_global_norm;
use optim::{LrSchedule, ema_update};

/// Runs `build` right after seeding the backend RNG, under a process-wide lock.
///
/// burn's backend RNGs are global to the process: without the lock, two runs initialising at
/// the same time (parallel tests, several stages in one process) interleave their draws and a
/// fixed seed no longer gives fixed weights.
pub fn seeded<B: burn::tensor::backend::Backend, T>(
    device: &B::Device,
    seed: u64,
    build: impl FnOnce() -> T,
) -> T {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, seed);
    build()
}

/// Optimisation and bookkeeping options common to every stage (the TOML `[train]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// Optimizer steps.
    pub steps: usize,
    /// Images per micro-batch.
    pub batch: usize,
    /// Micro-batches accumulated per optimizer step.
    #[serde(default = "one")]
    pub accumulate: usize,
    /// Peak learning rate.
    pub lr: f64,
    #[serde(default)]
    pub warmup_steps: usize,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    #[serde(default = "one_f")]
    pub grad_clip: f64,
    #[serde(default = "default_ema")]
    pub ema_decay: f64,
    pub seed: u64,
    #[serde(default = "default_every")]
    pub checkpoint_every: usize,
    #[serde(default = "default_every")]
    pub validate_every: usize,
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Batches prepared ahead on the loader thread.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Compute threads of the run's private pool (0: one per core). With 1, CPU runs are
    /// bit-reproducible under any machine load; with more, burn-flex's parallel f32 sums can
    /// differ in the last bits when the machine is oversubscribed (see `on_private_pool`).
    #[serde(default)]
    pub threads: usize,
}

fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_ema() -> f64 {
    0.999
}
fn default_every() -> usize {
    500
}
fn default_keep() -> usize {
    2
}
fn default_prefetch() -> usize {
    2
}

impl TrainOptions {
    /// # Errors
    /// For option values that cannot train.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.steps > 0 && self.batch > 0 && self.accumulate > 0,
            "steps, batch and accumulate must be positive"
        );
        anyhow::ensure!(self.lr > 0.0 && self.lr.is_finite(), "lr must be positive");
        anyhow::ensure!(
            (0.0..1.0).contains(&self.ema_decay),
            "ema_decay must be in [0, 1)"
        );
        anyhow::ensure!(self.grad_clip > 0.0, "grad_clip must be positive");
        anyhow::ensure!(
            self.checkpoint_every > 0 && self.validate_every > 0,
            "intervals must be positive"
        );
        Ok(())
    }

    fn schedule(&self) -> LrSchedule {
        LrSchedule {
            peak: self.lr,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
            final_ratio: 0.1,
        }
    }
}

/// The losses of one micro-batch: the total to minimise and named terms to log.
pub struct Losses<B: AutodiffBackend> {
    pub total: Tensor<B, 1>,
    pub terms: Vec<(&'static str, Tensor<B, 1>)>,
}

/// What a training stage provides to [`fit`].
pub trait Stage<B: AutodiffBackend> {
    type Model: AutodiffModule<B> + Clone + Send;
    type Batch: Send + 'static;

    fn name(&self) -> &'static str;
    fn options(&self) -> &TrainOptions;
    /// Builds the batch of a step; runs on the loader thread.
    fn batch_maker(&self) -> Box<dyn Fn(usize) -> anyhow::Result<Self::Batch> + Send>;
    /// Losses of one micro-batch (`micro` = index inside the accumulation).
    fn losses(&self, model: &Self::Model, batch: &Self::Batch, device: &B::Device) -> Losses<B>;
    /// Clips the gradients; by default by the global norm of all of them. Stages that train
    /// several networks together (a GAN) clip each group separately, as separate optimizers
    /// would. Returns the norm before clipping (the largest group's).
    fn clip(
        &self,
        model: &Self::Model,
        grads: GradientsParams,
        max_norm: f64,
    ) -> (GradientsParams, f64) {
        clip_global_norm(model, grads, max_norm)
    }
    /// Validation with the EMA weights; returns named metrics and may write sample images.
    fn validate(
        &self,
        ema: &<Self::Model as AutodiffModule<B>>::InnerModule,
        step: usize,
        out_dir: &Path,
    ) -> anyhow::Result<Vec<(String, f64)>>;
}

/// The trained weights and their EMA.
pub struct Fitted<B: AutodiffBackend, M: AutodiffModule<B>> {
    pub model: M,
    pub ema: M::InnerModule,
}

type Bin = BinBytesRecorder<FullPrecisionSettings>;

fn to_bytes<B: burn::tensor::backend::Backend, R: burn::record::Record<B>>(
    record: R,
) -> anyhow::Result<Vec<u8>> {
    Recorder::<B>::record(&Bin::default(), record, ())
        .map_err(|e| anyhow::anyhow!("cannot serialise record: {e:?}"))
}

fn from_bytes<B: burn::tensor::backend::Backend, R: burn::record::Record<B>>(
    bytes: &[u8],
    device: &B::Device,
) -> anyhow::Result<R> {
    Recorder::<B>::load(&Bin::default(), bytes.to_vec(), device)
        .map_err(|e| anyhow::anyhow!("cannot read record: {e:?}"))
}

fn scalar<B: AutodiffBackend>(t: Tensor<B, 1>) -> f64 {
    f64::from(t.into_scalar().elem::<f32>())
}

/// A JSON-lines log (one object per logged step or validation).
struct RunLog(BufWriter<File>);

impl RunLog {
    /// Opens the log for appending after `step` steps: records of later steps (written by a
    /// run that was killed before its next checkpoint, and redone now) and a line cut short
    /// by the kill are dropped, so a resumed run's log reads like an uninterrupted one.
    fn resume_after(path: &Path, step: usize) -> anyhow::Result<Self> {
        if let Ok(text) = fs::read_to_string(path) {
            let kept: String = text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s as usize <= step)
                })
                .map(|line| format!("{line}\n"))
                .collect();
            if kept.len() != text.len() {
                let tmp = path.with_extension("jsonl.partial");
                fs::write(&tmp, kept)?;
                fs::rename(&tmp, path)?;
            }
        }
        Self::open(path)
    }

    fn open(path: &Path) -> anyhow::Result<Self> {
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self(BufWriter::new(f)))
    }
    fn write(&mut self, value: serde_json::Value) -> anyhow::Result<()> {
        writeln!(self.0, "{value}")?;
        self.0.flush()?;
        Ok(())
    }
}

/// How far one invocation of [`fit`] goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunLimits {
    /// Continue from the newest intact checkpoint.
    pub resume: bool,
    /// Stop (with a checkpoint) once this many steps are done, before `steps`: for
    /// time-boxed sessions; a later `resume` continues on the same schedule.
    pub stop_after: Option<usize>,
    /// Stop (with a validation and a checkpoint) after the first step that ends this long
    /// after training started (loading and the first compile of kernels included): a run
    /// that must fit a machine lent for a fixed time; `resume` continues it.
    pub time_limit: Option<std::time::Duration>,
}

/// Runs `f` on a rayon pool of its own. The CPU backend (burn-flex) parallelises some f32
/// reductions with rayon, whose adaptive splitting follows work stealing: other work on a
/// shared pool (a second run in the same process, parallel tests) can change the summation
/// order and so the last bits of the result. A private pool keeps a run reproducible.
///
/// # Errors
/// When the pool cannot be built, or `f` fails.
pub fn on_private_pool<T: Send>(
    threads: usize,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start the compute threads")?;
    pool.install(f)
}

/// Named scalar values a micro-batch logs.
type LoggedTerms = Vec<(&'static str, f64)>;

/// Gradients (on the first device, each scaled by `1 / micro_batches.len()`) and logged
/// values (with `loss`) of each micro-batch of one optimizer step.
///
/// With one device the micro-batches run in order on the calling thread. With several, the
/// data-parallel scheme of burn-train's multi-device step: micro-batch `j` goes to device
/// `j % n`, each device gets a replica of the model (`Module::fork`, same parameter ids), runs
/// forward and backward on its own thread, and its gradients come back to the first device
/// (`GradientsParams::to_device`) for the caller's `GradientsAccumulator`: one optimizer step
/// over all devices' micro-batches, as if they had run one after another on one device.
fn micro_step_grads<B: AutodiffBackend, S: Stage<B> + Sync>(
    stage: &S,
    model: &S::Model,
    micro_batches: Vec<S::Batch>,
    devices: &[B::Device],
) -> anyhow::Result<Vec<(GradientsParams, LoggedTerms)>> {
    let count = micro_batches.len() as f64;
    let main = &devices[0];
    let one = |replica: &S::Model, batch: &S::Batch, device: &B::Device| {
        let mut losses = stage.losses(replica, batch, device);
        if crate::fault::fires(crate::fault::LOSS_NAN) {
            losses.total = losses.total.mul_scalar(f64::NAN);
        }
        let grads =
            GradientsParams::from_grads(losses.total.clone().div_scalar(count).backward(), replica);
        let mut terms: LoggedTerms = losses
            .terms
            .into_iter()
            .map(|(name, value)| (name, scalar(value)))
            .collect();
        terms.push(("loss", scalar(losses.total)));
        (grads, terms)
    };
    if devices.len() == 1 {
        return Ok(micro_batches
            .iter()
            .map(|batch| one(model, batch, main))
            .collect());
    }
    let mut per_device: Vec<Vec<(usize, S::Batch)>> = devices.iter().map(|_| Vec::new()).collect();
    for (j, batch) in micro_batches.into_iter().enumerate() {
        per_device[j % devices.len()].push((j, batch));
    }
    let mut results: Vec<(usize, GradientsParams, LoggedTerms)> = std::thread::scope(|scope| {
        let workers: Vec<_> = devices
            .iter()
            .zip(per_device)
            .map(|(device, batches)| {
                let replica = model.clone().fork(device);
                let one = &one;
                scope.spawn(move || {
                    batches
                        .into_iter()
                        .map(|(j, batch)| {
                            let (grads, terms) = one(&replica, &batch, device);
                            (j, grads.to_device(main, &replica), terms)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a training device thread panicked"))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?
    .into_iter()
    .flatten()
    .collect();
    // Accumulate in micro-batch order, whatever order the devices finished in.
    results.sort_by_key(|r| r.0);
    Ok(results.into_iter().map(|(_, g, t)| (g, t)).collect())
}

/// `n` devices of backend `B` for data-parallel training: indices `0..n` of the default
/// device's kind (CUDA 0..n, wgpu discrete GPUs 0..n, ...). The CPU backend has a single device;
/// asking it for more replicates the model on that one device (the same data-parallel code
/// path, without the speed-up).
///
/// # Errors
/// When `n` is 0.
pub fn devices<B: burn::tensor::backend::Backend>(n: usize) -> anyhow::Result<Vec<B::Device>> {
    use burn::tensor::backend::{Device, DeviceId};
    anyhow::ensure!(n > 0, "--devices must be at least 1");
    let default = B::Device::default();
    if n == 1 {
        return Ok(vec![default]);
    }
    let kind = default.to_id().type_id;
    Ok((0..n)
        .map(|i| B::Device::from_id(DeviceId::new(kind, i as u16)))
        .collect())
}

/// The EMA weights of the newest intact checkpoint in `checkpoints` loaded into `template`
/// (a module of the trained architecture), with the checkpoint's step; `None` without one.
///
/// # Errors
/// When the checkpoint cannot be read or does not fit `template`.
pub fn latest_ema<B: burn::tensor::backend::Backend, M: Module<B>>(
    checkpoints: &Path,
    template: M,
    device: &B::Device,
) -> anyhow::Result<Option<(M, usize)>> {
    let store = CheckpointStore::new(checkpoints, 1)?;
    let Some(ckpt) = store.latest()? else {
        return Ok(None);
    };
    let bytes = ckpt
        .parts
        .get("ema")
        .with_context(|| format!("{}: no part `ema`", ckpt.dir.display()))?;
    let module = template.load_record(from_bytes::<B, _>(bytes, device)?);
    Ok(Some((module, ckpt.meta.step)))
}

/// Trains `model` with `stage` in `run_dir` (checkpoints in `run_dir/checkpoints`, the log in
/// `run_dir/log.jsonl`, validation samples in `run_dir/samples`). With `limits.resume`,
/// continues from the newest intact checkpoint; the result is bit-identical to an
/// uninterrupted run on deterministic backends.
///
/// # Errors
/// Data, IO or checkpoint errors, and a non-finite loss or gradient (the error names the step).
pub fn fit<B: AutodiffBackend, S: Stage<B> + Sync>(
    stage: &S,
    model: S::Model,
    run_dir: &Path,
    limits: RunLimits,
    devices: &[B::Device],
) -> anyhow::Result<Fitted<B, S::Model>> {
    let opts = stage.options().clone();
    opts.validate()?;
    let device = devices.first().context("no device to train on")?;
    fs::create_dir_all(run_dir.join("samples"))
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let store = CheckpointStore::new(run_dir.join("checkpoints"), opts.keep_checkpoints)?;
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(opts.weight_decay as f32)
        .with_epsilon(1e-8)
        .init::<B, S::Model>();
    let mut model = model;
    let mut ema = model.valid();
    let mut start = 0;
    if limits.resume
        && let Some(ckpt) = store.latest()?
    {
        let part = |name: &str| {
            ckpt.parts
                .get(name)
                .with_context(|| format!("{}: no part `{name}`", ckpt.dir.display()))
        };
        model = model.load_record(from_bytes::<B, _>(part("model")?, device)?);
        ema = ema.load_record(from_bytes::<B::InnerBackend, _>(part("ema")?, device)?);
        optimizer = optimizer.load_record(from_bytes::<B, _>(part("optimizer")?, device)?);
        start = ckpt.meta.step;
        tracing::info!(
            "{}: resumed from {} (step {start})",
            stage.name(),
            ckpt.dir.display()
        );
    }
    let end = limits.stop_after.map_or(opts.steps, |s| s.min(opts.steps));
    if start >= end {
        return Ok(Fitted { model, ema });
    }

    let schedule = opts.schedule();
    let mut log = RunLog::resume_after(&run_dir.join("log.jsonl"), start)?;
    let loader = Prefetcher::new(
        start * opts.accumulate,
        end * opts.accumulate,
        opts.prefetch,
        stage.batch_maker(),
    );
    let bar = indicatif::ProgressBar::new(opts.steps as u64).with_position(start as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(stage.name());
    let save = |step: usize,
                model: &S::Model,
                ema: &<S::Model as AutodiffModule<B>>::InnerModule,
                optimizer: &_|
     -> anyhow::Result<()> {
        let optimizer: &burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, S::Model, B> =
            optimizer;
        let parts = [
            ("model", to_bytes::<B, _>(model.clone().into_record())?),
            (
                "ema",
                to_bytes::<B::InnerBackend, _>(ema.clone().into_record())?,
            ),
            ("optimizer", to_bytes::<B, _>(optimizer.to_record())?),
        ];
        store.save(
            step,
            BTreeMap::from([("stage".to_string(), stage.name().to_string())]),
            &parts,
        )?;
        Ok(())
    };

    let started = Instant::now();
    for step in start..end {
        let lr = schedule.at(step);
        let mut accumulator = GradientsAccumulator::<S::Model>::new();
        let mut logged: BTreeMap<&'static str, f64> = BTreeMap::new();
        let micro_batches = (0..opts.accumulate)
            .map(|_| loader.next_batch())
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (grads, terms) in micro_step_grads(stage, &model, micro_batches, devices)? {
            accumulator.accumulate(&model, grads);
            for (name, value) in terms {
                *logged.entry(name).or_default() += value / opts.accumulate as f64;
            }
        }
        let (grads, grad_norm) = stage.clip(&model, accumulator.grads(), opts.grad_clip);
        // Any non-finite value (loss, a reward, the gradient) stops the run before the
        // optimizer step: the weights never take a NaN, and no checkpoint holds one.
        let broken: Vec<String> = logged
            .iter()
            .map(|(k, v)| (*k, *v))
            .chain([("grad_norm", grad_norm)])
            .filter(|(_, v)| !v.is_finite())
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        if !broken.is_empty() {
            bar.abandon();
            bail!(
                "{}: non-finite {} at step {} (as numbered in the log); stopped, the last good \
                 checkpoint is kept in {}",
                stage.name(),
                broken.join(", "),
                step + 1,
                store.dir().display()
            );
        }
        model = optimizer.step(lr, model, grads);
        ema = ema_update(ema, &model.valid(), opts.ema_decay);
        let done = step + 1;
        let images_per_s = ((done - start) * opts.batch * opts.accumulate) as f64
            / started.elapsed().as_secs_f64();
        bar.set_position(done as u64);
        bar.set_message(format!(
            "loss {:.4} {:.1} img/s",
            logged["loss"], images_per_s
        ));
        let mut record = serde_json::json!({ "step": done, "lr": lr, "grad_norm": grad_norm, "images_per_s": images_per_s });
        for (k, v) in &logged {
            record[*k] = (*v).into();
        }
        log.write(record)?;
        let out_of_time = limits
            .time_limit
            .is_some_and(|limit| started.elapsed() >= limit);
        let last = done == end || out_of_time;
        if done % opts.validate_every == 0 || last {
            let metrics = stage.validate(&ema, done, &run_dir.join("samples"))?;
            let mut record = serde_json::json!({ "step": done, "validation": true });
            for (k, v) in &metrics {
                record[k.as_str()] = (*v).into();
            }
            bar.println(format!(
                "{} step {done}: {}",
                stage.name(),
                metrics
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            log.write(record)?;
        }
        if done % opts.checkpoint_every == 0 || last {
            save(done, &model, &ema, &optimizer)?;
        }
        if out_of_time && done < end {
            bar.println(format!(
                "{}: time limit reached after step {done} of {}; stopped with a checkpoint \
                 (`--resume` continues)",
                stage.name(),
                opts.steps
            ));
            break;
        }
    }
    bar.finish();
    Ok(Fitted { model, ema })
}
