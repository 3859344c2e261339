//! The hostile-input corpus (`tests/hostile/`, made by `tests/hostile/generate.py`): every file
//! gets the outcome `expected.json` names (a decoded picture of the right size, orientation,
//! alpha, or a clear error), through the library and through the CLI, and nothing panics.

use std::path::{Path, PathBuf};

use integration_tests::{run_upscale, scratch_dir};
use model::tiling::check_output_size;
use serde_json::Value;
use trainer_native::image_io::decode_image_bytes;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hostile")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(corpus().join("expected.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest JSON")
}

/// `pattern` is `a|b|c`: the message must contain one of the alternatives (any case).
fn mentions(message: &str, pattern: &str) -> bool {
    let message = message.to_lowercase();
    pattern
        .split('|')
        .any(|p| message.contains(&p.to_lowercase()))
}

fn is_red(px: [u8; 3]) -> bool {
    px[0] > 170 && px[1] < 90 && px[2] < 90
}

#[test]
fn the_corpus_is_large_enough_and_covers_each_kind() {
    let m = manifest();
    let images = m["images"].as_array().unwrap();
    let weights = m["weights"].as_array().unwrap();
    assert!(
        images.len() + weights.len() >= 30,
        "{} files",
        images.len() + weights.len()
    );
    for needle in [
        "truncated.png",
        "truncated.jpg",
        "truncated.webp",
        "truncated.bmp",
        "empty.png",
        "zero-by-zero.png",
        "one-pixel.png",
        "bomb.png",
        "rgb16.png",
        "palette.png",
        "gray.png",
        "cmyk.jpg",
        "rgba.png",
        "exif-orientation-6.jpg",
        "animated.gif",
        "text.png",
    ] {
        assert!(
            images.iter().any(|c| c["file"] == needle),
            "{needle} missing"
        );
    }
    for needle in [
        "truncated",
        "bit-flipped",
        "format-version-99",
        "other-architecture",
    ] {
        assert!(
            weights
                .iter()
                .any(|c| c["file"].as_str().unwrap().starts_with(needle)),
            "{needle} missing"
        );
    }
}

/// The decoder path every command uses (upscale, eval, data loading), with the upscaler's x4
/// output-size check.
#[test]
fn every_corpus_image_decodes_as_expected_or_fails_clearly() {
    let mut failures = Vec::new();
    for case in manifest()["images"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let bytes = std::fs::read(corpus().join("images").join(file)).unwrap();
        let result = std::panic::catch_unwind(|| {
            decode_image_bytes(&bytes, |w, h| {
                Ok(check_output_size(w as usize, h as usize, 4)?)
            })
        });
        let Ok(result) = result else {
            failures.push(format!("{file}: panicked"));
            continue;
        };
        match (case["expect"].as_str().unwrap(), result) {
            ("ok" | "ok-or-error", Ok(img)) => {
                if case["expect"] == "ok-or-error" {
                    continue;
                }
                let size = [img.rgb.width(), img.rgb.height()];
                let want: Vec<u32> = case["size"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect();
                if size[..] != want[..] {
                    failures.push(format!("{file}: size {size:?}, expected {want:?}"));
                }
                if img.alpha.is_some() != case["alpha"].as_bool().unwrap() {
                    failures.push(format!("{file}: alpha {}", img.alpha.is_some()));
                }
                // The red marker block sits where the orientation puts it.
                let (w, h) = (
                    img.rgb.width().saturating_sub(2),
                    img.rgb.height().saturating_sub(2),
                );
                let corner = match case["marker"].as_str().unwrap() {
                    "top-left" => Some((1, 1)),
                    "top-right" => Some((w, 1)),
                    "bottom-left" => Some((1, h)),
                    "bottom-right" => Some((w, h)),
                    _ => None,
                };
                if let Some((x, y)) = corner
                    && !is_red(img.rgb.get_pixel(x, y).0)
                {
                    failures.push(format!(
                        "{file}: no red marker at the {} corner ({:?})",
                        case["marker"],
                        img.rgb.get_pixel(x, y).0
                    ));
                }
            }
            ("error" | "ok-or-error", Err(e)) => {
                let message = format!("{e:#}");
                if let Some(pattern) = case["message"].as_str()
                    && !mentions(&message, pattern)
                {
                    failures.push(format!(
                        "{file}: error `{message}` does not match `{pattern}`"
                    ));
                }
            }
            (_, Ok(_)) => failures.push(format!("{file}: decoded, but an error was expected")),
            (_, Err(e)) => failures.push(format!("{file}: {e:#}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// One CLI run over the whole folder: the good files are upscaled (with their alpha), each bad
/// one is named with its reason, the run goes on past them and exits 1 (not a panic's 101).
#[test]
fn the_cli_upscales_a_folder_of_hostile_files_and_names_each_failure() {
    let dir = scratch_dir("hostile-cli");
    let weights = dir.join("w.safetensors");
    integration_tests::init_tiny_f32(&weights);
    let out = dir.join("out");
    let run = run_upscale(&weights, &corpus().join("images"), &out, &["--scale", "2"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mut failures = Vec::new();
    for case in manifest()["images"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let written = out.join(file).with_extension("png");
        // The failure list names each file on its own line with the reason.
        let line = stderr.lines().find(|l| {
            l.trim_start()
                .starts_with(&format!("{}", corpus().join("images").join(file).display()))
        });
        match case["expect"].as_str().unwrap() {
            "ok" => match image::open(&written) {
                Ok(img) => {
                    let want: Vec<u32> = case["size"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| 2 * v.as_u64().unwrap() as u32)
                        .collect();
                    if [img.width(), img.height()][..] != want[..] {
                        failures.push(format!("{file}: output {}x{}", img.width(), img.height()));
                    }
                    if img.color().has_alpha() != case["alpha"].as_bool().unwrap() {
                        failures.push(format!("{file}: output alpha {:?}", img.color()));
                    }
                }
                Err(e) => failures.push(format!("{file}: no output ({e}); {line:?}")),
            },
            "error" => {
                let pattern = case["message"].as_str().unwrap();
                match line {
                    Some(l) if mentions(l, pattern) => {}
                    _ => failures.push(format!("{file}: failure line {line:?} lacks `{pattern}`")),
                }
                if written.exists() {
                    failures.push(format!("{file}: an output was written"));
                }
            }
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "\n{}\n--- stderr:\n{stderr}",
        failures.join("\n")
    );
}

/// Alpha survives the upscale: the output's alpha is the bicubic upscale of the input's.
#[test]
fn transparency_is_carried_through_the_cli_upscale() {
    let dir = scratch_dir("hostile-alpha");
    let weights = dir.join("w.safetensors");
    integration_tests::init_tiny_f32(&weights);
    let input = corpus().join("images/rgba.png");
    let output = dir.join("out.png");
    assert!(
        run_upscale(&weights, &input, &output, &["--scale", "2"])
            .status
            .success()
    );
    let src = image::open(&input).unwrap().to_rgba8();
    let alpha: Vec<u8> = src.pixels().map(|p| p.0[3]).collect();
    let expected = model::resample::bicubic_upsample_plane_u8(
        &alpha,
        src.width() as usize,
        src.height() as usize,
        2,
    );
    let out = image::open(&output).unwrap().to_rgba8();
    let got: Vec<u8> = out.pixels().map(|p| p.0[3]).collect();
    assert_eq!(got, expected);
    assert!(got.iter().any(|&a| a < 128) && got.iter().any(|&a| a > 128));

    // JPEG cannot hold it: a clear error instead of silently dropping it.
    let run = run_upscale(&weights, &input, &dir.join("out.jpg"), &["--scale", "2"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("transparency"));
    assert!(!dir.join("out.jpg").exists());
}

/// Every hostile weight file: the library returns the typed error, the CLI exits 1 with it.
#[test]
fn every_hostile_weight_file_is_refused_with_its_reason() {
    let device = Default::default();
    let image = corpus().join("images/rgb.png");
    let dir = scratch_dir("hostile-weights");
    let mut failures = Vec::new();
    for case in manifest()["weights"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let pattern = case["message"].as_str().unwrap();
        let path = corpus().join("weights").join(file);
        let bytes = std::fs::read(&path).unwrap();
        match std::panic::catch_unwind(|| {
            model::load_weights::<burn::backend::Flex>(&bytes, &device).map(|_| ())
        }) {
            Err(_) => failures.push(format!("{file}: load_weights panicked")),
            Ok(Ok(())) => failures.push(format!("{file}: loaded")),
            Ok(Err(e)) if !mentions(&e.to_string(), pattern) => {
                failures.push(format!("{file}: `{e}` does not match `{pattern}`"));
            }
            Ok(Err(_)) => {}
        }
        let run = run_upscale(&path, &image, &dir.join(format!("{file}.png")), &[]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        if run.status.code() != Some(1)
            || !mentions(&stderr, pattern)
            || stderr.contains("panicked")
        {
            failures.push(format!(
                "{file}: CLI exit {:?}: {stderr}",
                run.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
