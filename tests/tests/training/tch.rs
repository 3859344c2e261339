//! The LibTorch backend (burn-tch, the `tch` feature) against burn-flex: the same weights and
//! inputs give the same one-step output and the same NAOSD training step within 1e-4, a run
//! interrupted and resumed on LibTorch ends bit-identical to an uninterrupted one, and the CLI
//! runs on it (and picks it by default when it is built).

use std::path::{Path, PathBuf};

use crate::serial;
use integration_tests::{
    max_weight_diff, run_log, run_upscale, scratch_dir, synthetic_image, trainer_binary,
};
use model::{NaosdOptions, load_weights};
use trainer_native::{
    degrade::DegradationConfig,
    loss::discriminator::DiscriminatorConfig,
    stages::naosd::{self, NaosdConfig, NaosdLoss},
    train::{RunLimits, TrainOptions},
};

type Flex = burn::backend::Flex;
type Tch = burn::backend::LibTorch<f32>;

const TOLERANCE: f64 = 1e-4;

/// `tiny` weights with every branch random (`bench parity-dump`: a fresh model zero-initialises
/// its residual branches, which would make most of the network trivially equal), f32.
fn random_tiny_weights(root: &Path) -> PathBuf {
    let out = root.join("case");
    let status = std::process::Command::new(trainer_binary())
        .args([
            "bench",
            "parity-dump",
            "--preset",
            "tiny",
            "--backend",
            "cpu",
            "--out",
        ])
        .arg(&out)
        .status()
        .expect("run trainer-native bench parity-dump");
    assert!(status.success(), "parity-dump failed");
    out.join("weights.safetensors")
}

fn data_dir(root: &Path) -> PathBuf {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..4u32 {
        synthetic_image(40 + 8 * i, 44 + 4 * i)
            .save(data.join(format!("img{i}.png")))
            .unwrap();
    }
    data
}

/// NAOSD on the tiny preset from `init`: E trains, and every loss term but the adversarial one
/// (its discriminator is initialised by each backend's own RNG, so it could not match).
fn naosd_config(init: &Path, data: &Path, steps: usize, lr: f64) -> NaosdConfig {
    NaosdConfig {
        init: init.to_path_buf(),
        data: data.to_path_buf(),
        validation: None,
        crop: 32,
        train_encoder: true,
        bicubic_fraction: 0.5,
        validation_bicubic: false,
        validation_side: 256,
        t_add: 250,
        t_diff: 100,
        train: TrainOptions {
            steps,
            batch: 2,
            accumulate: 1,
            lr,
            warmup_steps: 0,
            weight_decay: 0.01,
            grad_clip: 1.0,
            // The exported weights are the trained ones, not an average with the start.
            ema_decay: 0.0,
            seed: 5,
            checkpoint_every: 2,
            validate_every: steps,
            keep_checkpoints: 1,
            prefetch: 2,
            threads: 1,
        },
        loss: NaosdLoss {
            adversarial: 0.0,
            ..NaosdLoss::default()
        },
        degradation: DegradationConfig::default(),
        discriminator: DiscriminatorConfig {
            channels: vec![8, 16, 16],
        },
    }
}

/// The one-step output (default options, untiled) of the weight file `bytes` on backend `B`.
fn upscale<B: burn::tensor::backend::Backend>(
    bytes: &[u8],
    lr: &image::RgbImage,
    device: &B::Device,
) -> Vec<f32> {
    let model = load_weights::<B>(bytes, device).unwrap();
    let input = trainer_native::image_io::rgb_to_tensor::<B>(lr, device);
    model
        .upscale(input, &NaosdOptions::default())
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap()
}

#[test]
fn libtorch_matches_flex_forward_and_training_step() {
    let _serial = serial();
    let root = scratch_dir("tch-parity");
    let weights = random_tiny_weights(&root);
    let bytes = std::fs::read(&weights).unwrap();

    // Forward: the one-step pipeline, untiled, same seed (host-generated noise).
    let lr = synthetic_image(12, 10);
    let flex_device = Default::default();
    let tch_device = burn::backend::libtorch::LibTorchDevice::Cpu;
    let a = upscale::<Flex>(&bytes, &lr, &flex_device);
    let b = upscale::<Tch>(&bytes, &lr, &tch_device);
    assert_eq!(a.len(), 3 * 40 * 48);
    let forward = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max);
    assert!(forward <= TOLERANCE, "forward differs by {forward:e}");
    let spread = a.iter().map(|&x| f64::from(x)).fold(f64::NAN, f64::max)
        - a.iter().map(|&x| f64::from(x)).fold(f64::NAN, f64::min);
    assert!(
        spread > 0.1,
        "a flat output would make the comparison empty"
    );

    // One NAOSD step (E and UNet train): the logged loss terms and gradient norm, and the
    // weights after AdamW. lr 1e-5 keeps an AdamW step (lr * sign(g) on the first step) below
    // the tolerance where a near-zero gradient's sign differs between the backends.
    let data = data_dir(&root);
    let step = |dir: &str, flex: bool| -> (PathBuf, serde_json::Value) {
        let config = naosd_config(&weights, &data, 1, 1e-5);
        let run_dir = root.join(dir);
        let out = if flex {
            naosd::run::<Flex>(config, &run_dir, RunLimits::default(), &[flex_device])
        } else {
            naosd::run::<Tch>(config, &run_dir, RunLimits::default(), &[tch_device])
        }
        .unwrap();
        let first = run_log(&run_dir)
            .into_iter()
            .find(|v| v["step"] == 1)
            .unwrap();
        (out, first)
    };
    let (flex_out, flex_log) = step("flex", true);
    let (tch_out, tch_log) = step("tch", false);
    for key in [
        "loss",
        "l1",
        "ms_ssim",
        "gradient",
        "latent_mse",
        "grad_norm",
    ] {
        let (x, y) = (flex_log[key].as_f64(), tch_log[key].as_f64());
        let (x, y) = (
            x.unwrap_or_else(|| panic!("{key} in {flex_log}")),
            y.unwrap(),
        );
        assert!(
            (x - y).abs() <= TOLERANCE * x.abs().max(1.0),
            "{key}: flex {x} vs LibTorch {y}"
        );
    }
    let after = f64::from(max_weight_diff(&flex_out, &tch_out));
    assert!(
        after <= TOLERANCE,
        "weights after one step differ by {after:e}"
    );
    // ... and the step did change them (lr * sign(g) = 1e-5 on the moved weights).
    let moved = f64::from(max_weight_diff(&weights, &tch_out));
    assert!(
        moved >= 5e-6,
        "the step left the weights where they were ({moved:e})"
    );
}

#[test]
fn libtorch_run_interrupted_and_resumed_is_bit_identical() {
    let _serial = serial();
    let root = scratch_dir("tch-resume");
    let weights = random_tiny_weights(&root);
    let data = data_dir(&root);
    let device = burn::backend::libtorch::LibTorchDevice::Cpu;
    let train = |dir: &str, limits: RunLimits| {
        naosd::run::<Tch>(
            naosd_config(&weights, &data, 5, 1e-3),
            &root.join(dir),
            limits,
            std::slice::from_ref(&device),
        )
        .unwrap()
    };
    let straight = train("a", RunLimits::default());
    train(
        "b",
        RunLimits {
            stop_after: Some(3),
            ..RunLimits::default()
        },
    );
    let resumed = train(
        "b",
        RunLimits {
            resume: true,
            ..RunLimits::default()
        },
    );
    assert!(
        std::fs::read(&straight).unwrap() == std::fs::read(&resumed).unwrap(),
        "the resumed LibTorch run differs from the uninterrupted one"
    );
    assert!(
        max_weight_diff(&weights, &straight) > 1e-4,
        "5 steps at lr 1e-3 moved nothing"
    );
}

#[test]
fn cli_runs_on_libtorch_and_picks_it_by_default() {
    let root = scratch_dir("tch-cli");
    let weights = random_tiny_weights(&root);
    let input = root.join("lr.png");
    synthetic_image(16, 12).save(&input).unwrap();
    let run = |name: &str, extra: &[&str]| -> image::RgbImage {
        let out = root.join(name);
        let result = run_upscale(&weights, &input, &out, extra);
        assert!(
            result.status.success(),
            "upscale {extra:?}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        image::open(&out).unwrap().to_rgb8()
    };
    let tch = run("tch.png", &["--backend", "tch"]);
    let default = run("default.png", &[]);
    let flex = run("flex.png", &["--backend", "cpu"]);
    assert_eq!(tch.dimensions(), (64, 48));
    assert!(
        tch == default,
        "the default backend of a tch build is LibTorch"
    );
    let worst = tch
        .as_raw()
        .iter()
        .zip(flex.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(
        worst <= 1,
        "LibTorch and burn-flex 8-bit outputs differ by {worst}"
    );
}
