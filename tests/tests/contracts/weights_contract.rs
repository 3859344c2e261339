//! The weight file is the only contract between the trainer and the browser: a file the
//! trainer exports must load in the model crate and in the web crate, and the CLI must
//! produce the output the library produces.

use std::process::Command;

use burn::tensor::{Tensor, TensorData};
use integration_tests::{scratch_dir, synthetic_image, trainer_binary};
use model::{NaosdOptions, load_weights};
use trainer_native::image_io;

type Cpu = burn::backend::Flex;

#[test]
fn exported_file_loads_in_model_and_web_and_cli_matches_library() {
    let dir = scratch_dir("contract");
    let weights = dir.join("tiny.safetensors");
    let status = Command::new(trainer_binary())
        .args(["init", "--preset", "tiny", "--out"])
        .arg(&weights)
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&weights).unwrap();

    // The web crate verifies and summarises it.
    let summary = web::weight_summary(&bytes).unwrap();
    assert_eq!(summary.preset, "tiny");
    assert!(summary.content_hash.starts_with("sha256:"));

    // The CLI upscales a file...
    let input = dir.join("in.png");
    synthetic_image(11, 9).save(&input).unwrap();
    let output = dir.join("out.png");
    let status = Command::new(trainer_binary())
        .arg("upscale")
        .arg("--weights")
        .arg(&weights)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--seed", "5", "--backend", "cpu"])
        .status()
        .unwrap();
    assert!(status.success());
    let cli = image::open(&output).unwrap().to_rgb8();
    assert_eq!(cli.dimensions(), (44, 36));

    // ... exactly as the library does with the same weights and seed.
    let device = Default::default();
    let model = load_weights::<Cpu>(&bytes, &device).unwrap();
    let lr = image_io::load_rgb::<Cpu>(&input, &device).unwrap();
    let sr = model
        .upscale(
            lr,
            &NaosdOptions {
                seed: 5,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(image_io::tensor_to_rgb(sr).unwrap(), cli);
}

#[test]
fn cli_reports_a_corrupted_weight_file_clearly() {
    let dir = scratch_dir("corrupt");
    let weights = dir.join("w.safetensors");
    std::fs::write(&weights, b"garbage that is not safetensors").unwrap();
    let input = dir.join("in.png");
    synthetic_image(4, 4).save(&input).unwrap();
    let out = Command::new(trainer_binary())
        .arg("upscale")
        .arg("--weights")
        .arg(&weights)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.join("o.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a valid GDPO-SR weight file"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn same_seed_same_output_on_cpu_and_wgpu() {
    // The noise is generated on the host, so two backends differ only by float rounding.
    let cpu_device = Default::default();
    let model = model::ModelConfig::tiny().init::<Cpu>(&cpu_device).unwrap();
    let bytes = model::save_weights(&model, model::StoredPrecision::F32).unwrap();
    let lr: Vec<f32> = (0..3 * 8 * 10)
        .map(|i| ((i * 29 % 17) as f32 / 8.0) - 1.0)
        .collect();
    let opts = NaosdOptions {
        seed: 11,
        ..Default::default()
    };

    let cpu_out: Vec<f32> = model
        .upscale(
            Tensor::from_data(TensorData::new(lr.clone(), [1, 3, 8, 10]), &cpu_device),
            &opts,
        )
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();

    type Gpu = burn::backend::Wgpu;
    let gpu_device = Default::default();
    let gpu_model = load_weights::<Gpu>(&bytes, &gpu_device).unwrap();
    let gpu_out: Vec<f32> = gpu_model
        .upscale(
            Tensor::from_data(TensorData::new(lr, [1, 3, 8, 10]), &gpu_device),
            &opts,
        )
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let max = cpu_out
        .iter()
        .zip(&gpu_out)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(max < 1e-4, "cpu vs wgpu max abs diff {max}");
}

/// The CLI's tiled path (what the browser test compares against) is the library's tiler, and
/// a folder is upscaled file by file.
#[test]
fn cli_tiles_like_the_library_and_upscales_folders() {
    let dir = scratch_dir("tiled");
    let weights = dir.join("tiny.safetensors");
    let model = model::ModelConfig::tiny()
        .init::<Cpu>(&Default::default())
        .unwrap();
    std::fs::write(
        &weights,
        model::save_weights(&model, model::StoredPrecision::F32).unwrap(),
    )
    .unwrap();
    let inputs = dir.join("in");
    std::fs::create_dir_all(inputs.join("sub")).unwrap();
    synthetic_image(30, 21).save(inputs.join("a.png")).unwrap();
    synthetic_image(9, 12)
        .save(inputs.join("sub/b.png"))
        .unwrap();

    let tensor = dir.join("a.safetensors");
    let status = Command::new(trainer_binary())
        .arg("upscale")
        .arg("--weights")
        .arg(&weights)
        .arg("--input")
        .arg(inputs.join("a.png"))
        .arg("--output")
        .arg(dir.join("a-x2.png"))
        .args([
            "--scale",
            "2",
            "--seed",
            "3",
            "--tile",
            "8",
            // The library side below runs burn-flex; bit-equality is a same-backend contract
            // (a `tch` build's default backend is LibTorch: tests/tests/training/tch.rs).
            "--backend",
            "cpu",
        ])
        .arg("--tensor-out")
        .arg(&tensor)
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&tensor).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let rgb = file.tensor("rgb").unwrap();
    assert_eq!(rgb.shape(), [3, 42, 60]);
    let cli: Vec<f32> = rgb
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();

    let (image, _) = trainer_native::upscale::load_host_image(&inputs.join("a.png"), 2).unwrap();
    let options = NaosdOptions {
        scale: 2,
        seed: 3,
        ..Default::default()
    };
    let tiles = model::TileOptions { tile: 8 };
    let lib = model::upscale_tiled(
        &model,
        &image,
        &options,
        tiles,
        &Default::default(),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(cli, lib.to_unit_range());

    let status = Command::new(trainer_binary())
        .arg("upscale")
        .arg("--weights")
        .arg(&weights)
        .arg("--input")
        .arg(&inputs)
        .arg("--output")
        .arg(dir.join("out"))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        image::open(dir.join("out/sub/b.png"))
            .unwrap()
            .to_rgb8()
            .dimensions(),
        (36, 48)
    );
    assert!(dir.join("out/a.png").exists());
}

/// Every tensor of a weight file as f32, by name.
fn tensors_of(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<f32>> {
    let file = safetensors::SafeTensors::deserialize(bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = match view.dtype() {
                safetensors::Dtype::F16 => view
                    .data()
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                _ => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            };
            (name, values)
        })
        .collect()
}

#[test]
fn blend_moves_every_parameter_the_fraction_alpha_and_refuses_what_cannot_blend() {
    let dir = scratch_dir("blend");
    let device = Default::default();
    // Two independently initialised models of one config: every parameter differs.
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    for path in [&a, &b] {
        let model = model::ModelConfig::tiny().init::<Cpu>(&device).unwrap();
        let bytes = model::save_weights(&model, model::StoredPrecision::F32).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let blend = |alpha: &str, b: &std::path::Path, out: &std::path::Path| {
        Command::new(trainer_binary())
            .args(["blend", "--alpha", alpha, "--a"])
            .arg(&a)
            .arg("--b")
            .arg(b)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = dir.join("blend.safetensors");
    let run = blend("0.25", &b, &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let bytes = std::fs::read(&out).unwrap();
    // A complete weight file: the model crate loads it (hash and config checked).
    load_weights::<Cpu>(&bytes, &device).unwrap();
    let (ta, tb, tout) = (
        tensors_of(&std::fs::read(&a).unwrap()),
        tensors_of(&std::fs::read(&b).unwrap()),
        tensors_of(&bytes),
    );
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tout.keys().collect::<Vec<_>>()
    );
    let mut moved = 0;
    for (name, out) in &tout {
        for ((&x, &y), &z) in ta[name].iter().zip(&tb[name]).zip(out) {
            let expected = x + 0.25 * (y - x);
            // f16 storage: relative error <= 2^-11.
            assert!(
                (z - expected).abs() <= expected.abs() * 1e-3 + 1e-6,
                "{name}: {z} vs {expected} (a {x}, b {y})"
            );
            moved += usize::from(x != y);
        }
    }
    assert!(
        moved > 1000,
        "the two models barely differ ({moved} values)"
    );

    // Refused, with nothing written: an alpha outside 0..=1, and another architecture.
    let refused = dir.join("refused.safetensors");
    let run = blend("1.5", &b, &refused);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--alpha must be within 0..=1"));
    let mut other = model::ModelConfig::tiny();
    other.unet.channels[0] *= 2;
    let other_file = dir.join("other.safetensors");
    let other_model = other.init::<Cpu>(&device).unwrap();
    std::fs::write(
        &other_file,
        model::save_weights(&other_model, model::StoredPrecision::F16).unwrap(),
    )
    .unwrap();
    let run = blend("0.5", &other_file, &refused);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("not the same architecture"));
    assert!(!refused.exists());
}
