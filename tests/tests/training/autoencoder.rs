//! Stage 1a end to end on generated images with the `tiny` preset: the loss decreases, the
//! stage writes a loadable weight file with an estimated latent scale, and a run interrupted
//! and resumed from its checkpoint ends bit-identical to an uninterrupted run.

use std::path::Path;

use crate::serial;
use integration_tests::{max_weight_diff, run_log, scratch_dir, synthetic_image};
use trainer_native::{
    stages::autoencoder::{AutoencoderConfig, AutoencoderLoss, run},
    train::{RunLimits, TrainOptions},
};

type Cpu = burn::backend::Flex;

fn make_data(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..6u32 {
        let img = synthetic_image(40 + 4 * i, 36 + 2 * i);
        img.save(dir.join(format!("img{i}.png"))).unwrap();
    }
}

fn config(data: &Path, steps: usize) -> AutoencoderConfig {
    AutoencoderConfig {
        preset: "tiny".into(),
        data: data.to_path_buf(),
        validation: Some(data.to_path_buf()),
        crop: 16,
        train: TrainOptions {
            steps,
            batch: 4,
            accumulate: 1,
            lr: 3e-3,
            warmup_steps: 2,
            weight_decay: 0.01,
            grad_clip: 1.0,
            ema_decay: 0.9,
            seed: 7,
            checkpoint_every: 3,
            validate_every: steps,
            keep_checkpoints: 2,
            prefetch: 2,
            threads: 1,
        },
        loss: AutoencoderLoss::default(),
    }
}

/// The training loss of every step, from the run's JSON-lines log.
fn losses(run_dir: &Path) -> Vec<f64> {
    run_log(run_dir)
        .into_iter()
        .filter(|v| v.get("validation").is_none())
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn loss_decreases_and_the_output_loads() {
    let _serial = serial();
    let root = scratch_dir("ae-train");
    make_data(&root.join("data"));
    let run_dir = root.join("run");
    let out = run::<Cpu>(
        config(&root.join("data"), 40),
        &run_dir,
        RunLimits::default(),
        &[Default::default()],
    )
    .unwrap();
    let l = losses(&run_dir);
    assert_eq!(l.len(), 40);
    let first: f64 = l[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = l[35..].iter().sum::<f64>() / 5.0;
    assert!(
        last < 0.7 * first,
        "loss did not decrease enough: {first:.4} -> {last:.4}"
    );

    let bytes = std::fs::read(out).unwrap();
    let model = model::load_weights::<Cpu>(&bytes, &Default::default()).unwrap();
    let k = model.config().latent_scale;
    assert!(
        k.is_finite() && k > 0.0 && (k - 1.0).abs() > 1e-6,
        "latent scale was not estimated: {k}"
    );
    assert!(run_dir.join("samples/autoencoder-0000040.png").exists());
}

#[test]
fn interrupted_and_resumed_run_is_bit_identical() {
    let _serial = serial();
    let root = scratch_dir("ae-resume");
    make_data(&root.join("data"));
    let device = Default::default();
    // One 6-step run in `dir` (the same config each time) with the given limits.
    let train = |dir: &str, limits: RunLimits| {
        run::<Cpu>(
            config(&root.join("data"), 6),
            &root.join(dir),
            limits,
            std::slice::from_ref(&device),
        )
        .unwrap()
    };
    let resumed = RunLimits {
        resume: true,
        ..RunLimits::default()
    };
    let straight = train("a", RunLimits::default());
    // Stop after 4 steps (the last checkpoint is at 3: a checkpoint is also written at the stop),
    // then resume to the end.
    train(
        "b",
        RunLimits {
            stop_after: Some(4),
            ..RunLimits::default()
        },
    );
    let continued = train("b", resumed);
    // A time limit that is already spent stops after the first step, with a checkpoint of
    // it, and the resumed run ends where the uninterrupted one did.
    train(
        "c",
        RunLimits {
            time_limit: Some(std::time::Duration::ZERO),
            ..RunLimits::default()
        },
    );
    let steps: Vec<String> = std::fs::read_dir(root.join("c/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("step-"))
        .collect();
    assert_eq!(
        steps,
        ["step-0000001"],
        "a spent time limit stops after step 1"
    );
    let after_time_limit = train("c", resumed);
    let (a, b, c) = (
        std::fs::read(straight).unwrap(),
        std::fs::read(continued).unwrap(),
        std::fs::read(after_time_limit).unwrap(),
    );
    assert!(a == b, "resumed run differs from the uninterrupted one");
    assert!(
        a == c,
        "run resumed after its time limit differs from the uninterrupted one"
    );
}

/// Data parallelism: two devices, each taking one of the two micro-batches of every step,
/// train the same model as one device taking both (dropping a device's gradients would halve
/// the batch and show here). On the CPU backend both "devices" are the one CPU: the code path
/// of a multi-GPU run (replicas by `fork`, per-device threads, gradients moved back with
/// `GradientsParams::to_device`, one optimizer step) on hardware CI has.
#[test]
fn two_devices_train_like_one_device_accumulating_their_micro_batches() {
    let _serial = serial();
    let root = scratch_dir("ae-ddp");
    make_data(&root.join("data"));
    let mut cfg = config(&root.join("data"), 4);
    cfg.train.accumulate = 2;
    cfg.train.batch = 2;
    let device: burn::backend::flex::FlexDevice = Default::default();
    let one = run::<Cpu>(
        cfg.clone(),
        &root.join("one"),
        RunLimits::default(),
        std::slice::from_ref(&device),
    )
    .unwrap();
    let two = run::<Cpu>(
        cfg.clone(),
        &root.join("two"),
        RunLimits::default(),
        &[device, device],
    )
    .unwrap();
    let diff = max_weight_diff(&one, &two);
    assert!(diff < 1e-5, "two devices vs one: {diff}");
    let mut half = cfg;
    half.train.accumulate = 1;
    let single = run::<Cpu>(half, &root.join("half"), RunLimits::default(), &[device]).unwrap();
    assert!(
        max_weight_diff(&one, &single) > 1e-4,
        "the second micro-batch must count"
    );
}
