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

#[test]
fn a_detail_range_runs_the_cli_anywhere_between_its_ends_and_refuses_what_cannot_be_one() {
    let dir = scratch_dir("detail-range");
    let device = Default::default();
    // Two trainings of one model: the same autoencoder, UNets initialised independently
    // (parameters made concrete by a load before the autoencoder is shared: `init` only
    // describes random values).
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    let low = model::ModelConfig::tiny().init::<Cpu>(&device).unwrap();
    let low = load_weights::<Cpu>(
        &model::save_weights(&low, model::StoredPrecision::F32).unwrap(),
        &device,
    )
    .unwrap();
    let mut high = model::ModelConfig::tiny().init::<Cpu>(&device).unwrap();
    high.autoencoder = low.autoencoder.clone();
    for (path, m) in [(&a, &low), (&b, &high)] {
        let bytes = model::save_weights(m, model::StoredPrecision::F32).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let trainer =
        |args: &[&std::ffi::OsStr]| Command::new(trainer_binary()).args(args).output().unwrap();
    let range =
        |low: &std::path::Path, high: &std::path::Path, default: &str, out: &std::path::Path| {
            trainer(&[
                "range".as_ref(),
                "--low".as_ref(),
                low.as_os_str(),
                "--high".as_ref(),
                high.as_os_str(),
                "--default".as_ref(),
                default.as_ref(),
                "--out".as_ref(),
                out.as_os_str(),
            ])
        };
    let ok = |run: std::process::Output| {
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    };
    let refused = |run: std::process::Output, why: &str| {
        assert!(!run.status.success());
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains(why), "expected {why:?} in: {stderr}");
    };
    let r = dir.join("range.safetensors");
    ok(range(&a, &b, "0.25", &r));
    let bytes = std::fs::read(&r).unwrap();
    let info = model::read_weight_info(&bytes).unwrap();
    assert_eq!(info.detail_default, Some(0.25));

    // Loaded, the model sits at the default: every UNet parameter a quarter of the way.
    let loaded = model::named_parameters(&load_weights::<Cpu>(&bytes, &device).unwrap());
    let (ta, tb) = (
        model::named_parameters(&low),
        model::named_parameters(&high),
    );
    let mut moved = 0;
    for (name, v) in &loaded {
        let (x, y) = (
            ta[name].to_vec::<f32>().unwrap(),
            tb[name].to_vec::<f32>().unwrap(),
        );
        for ((&z, &x), &y) in v.to_vec::<f32>().unwrap().iter().zip(&x).zip(&y) {
            let expected = x + 0.25 * (y - x);
            // Both ends stored as f16: relative error <= 2^-11 each.
            assert!(
                (z - expected).abs() <= (x.abs() + y.abs()) * 1e-3 + 1e-6,
                "{name}: {z} vs {expected} (low {x}, high {y})"
            );
            moved += usize::from(x != y);
        }
    }
    assert!(moved > 1000, "the two ends barely differ ({moved} values)");

    // The CLI's --detail: the default is the file's, the ends are the ends, and a point of
    // the range exported as one model gives the same output.
    let input = dir.join("in.png");
    synthetic_image(9, 7).save(&input).unwrap();
    let upscale = |weights: &std::path::Path, detail: Option<&str>, out: &str| {
        let out = dir.join(out);
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "upscale".as_ref(),
            "--weights".as_ref(),
            weights.as_os_str(),
            "--input".as_ref(),
            input.as_os_str(),
            "--output".as_ref(),
            out.as_os_str(),
            "--backend".as_ref(),
            "cpu".as_ref(),
        ];
        if let Some(d) = detail {
            args.extend::<[&std::ffi::OsStr; 2]>(["--detail".as_ref(), d.as_ref()]);
        }
        (trainer(&args), out)
    };
    let pixels = |(run, out): (std::process::Output, std::path::PathBuf)| {
        ok(run);
        image::open(out).unwrap().to_rgb8().into_raw()
    };
    let default = pixels(upscale(&r, None, "default.png"));
    assert_eq!(default, pixels(upscale(&r, Some("0.25"), "quarter.png")));
    let (zero, one) = (
        pixels(upscale(&r, Some("0"), "zero.png")),
        pixels(upscale(&r, Some("1"), "one.png")),
    );
    assert_ne!(zero, one);
    assert_ne!(zero, default);
    let fixed = dir.join("fixed.safetensors");
    ok(trainer(&[
        "export".as_ref(),
        "--weights".as_ref(),
        r.as_os_str(),
        "--detail".as_ref(),
        "0".as_ref(),
        "--out".as_ref(),
        fixed.as_os_str(),
    ]));
    assert_eq!(
        model::read_weight_info(&std::fs::read(&fixed).unwrap())
            .unwrap()
            .detail_default,
        None
    );
    assert_eq!(zero, pixels(upscale(&fixed, None, "fixed.png")));
    // Exporting the range keeps it, byte for byte (the web weight file is made this way).
    let again = dir.join("again.safetensors");
    ok(trainer(&[
        "export".as_ref(),
        "--weights".as_ref(),
        r.as_os_str(),
        "--out".as_ref(),
        again.as_os_str(),
    ]));
    assert!(
        std::fs::read(&again).unwrap() == bytes,
        "re-exported range differs"
    );

    // Refused, with nothing written or a clear message.
    let no = dir.join("refused.safetensors");
    refused(range(&a, &b, "1.5", &no), "0..=1");
    refused(range(&r, &b, "0.5", &no), "already holds a detail range");
    let mut other = model::ModelConfig::tiny();
    other.unet.channels[0] *= 2;
    let other_file = dir.join("other.safetensors");
    let other_model = other.init::<Cpu>(&device).unwrap();
    std::fs::write(
        &other_file,
        model::save_weights(&other_model, model::StoredPrecision::F16).unwrap(),
    )
    .unwrap();
    refused(
        range(&a, &other_file, "0.5", &no),
        "not the same architecture",
    );
    // Ends that differ outside the UNet (another autoencoder) cannot be one range.
    let foreign = dir.join("foreign.safetensors");
    let foreign_model = model::ModelConfig::tiny().init::<Cpu>(&device).unwrap();
    std::fs::write(
        &foreign,
        model::save_weights(&foreign_model, model::StoredPrecision::F32).unwrap(),
    )
    .unwrap();
    refused(range(&a, &foreign, "0.5", &no), "outside the detail part");
    assert!(!no.exists());
    refused(upscale(&a, Some("0.5"), "no.png").0, "not a detail range");
    refused(upscale(&r, Some("2"), "no.png").0, "0..=1");
}
