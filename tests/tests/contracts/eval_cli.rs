//! `trainer-native eval`: the table compares bicubic, Lanczos, saved outputs of other
//! upscalers and each weight file, on synthesised LR and on real LR/HR pairs.

use std::{collections::HashMap, path::Path, process::Command};

use integration_tests::{init_tiny_f32, scratch_dir, synthetic_image, trainer_binary};
use trainer_native::{eval::downscale_antialiased, planar::Planar};

/// One row of the Markdown table: its method and its cells by column header (NaN for "-").
#[derive(Debug)]
struct TableRow {
    method: String,
    cells: HashMap<String, f64>,
}

impl std::ops::Index<&str> for TableRow {
    type Output = f64;
    fn index(&self, column: &str) -> &f64 {
        &self.cells[column]
    }
}

fn table_rows(table: &str) -> Vec<TableRow> {
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let head = cells(table.lines().find(|l| l.starts_with("| method")).unwrap());
    table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| method"))
        .map(|l| {
            let row = cells(l);
            TableRow {
                method: row[0].clone(),
                cells: head
                    .iter()
                    .zip(&row)
                    .skip(1)
                    .map(|(h, c)| (h.clone(), c.parse().unwrap_or(f64::NAN)))
                    .collect(),
            }
        })
        .collect()
}

fn methods(rows: &[TableRow]) -> Vec<&str> {
    rows.iter().map(|r| r.method.as_str()).collect()
}

/// `(method, psnr, ssim)` rows of the Markdown table.
fn rows(table: &str) -> Vec<(String, f64, f64)> {
    table_rows(table)
        .iter()
        .map(|r| (r.method.clone(), r["PSNR-Y (dB) ↑"], r["SSIM-Y ↑"]))
        .collect()
}

/// Runs `trainer-native eval ARGS --out DIR/table.md`, which must succeed; the table's text
/// and rows.
fn eval_table(args: &[&str], dir: &Path) -> (String, Vec<TableRow>) {
    let out = dir.join("table.md");
    let status = Command::new(trainer_binary())
        .arg("eval")
        .args(args)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(out).unwrap();
    let rows = table_rows(&text);
    (text, rows)
}

fn eval(args: &[&str], dir: &Path) -> Vec<(String, f64, f64)> {
    rows(&eval_table(args, dir).0)
}

#[test]
fn eval_compares_bicubic_and_models_on_synthetic_and_paired_lr() {
    let dir = scratch_dir("eval");
    let (hr, lr) = (dir.join("hr"), dir.join("lr"));
    std::fs::create_dir_all(&hr).unwrap();
    std::fs::create_dir_all(&lr).unwrap();
    for (i, (w, h)) in [(40, 32), (36, 44)].into_iter().enumerate() {
        let img = synthetic_image(w, h);
        img.save(hr.join(format!("img{i}.png"))).unwrap();
        // The same LR the synthetic mode makes, written as a "real" pair.
        let small = downscale_antialiased(&Planar::from_rgb8(&img), 4);
        small
            .to_rgb8()
            .save(lr.join(format!("img{i}.png")))
            .unwrap();
    }
    let weights = dir.join("tiny.safetensors");
    init_tiny_f32(&weights);
    let w = format!("tiny={}", weights.display());
    let synthetic = eval(&["--hr", hr.to_str().unwrap(), "--weights", &w], &dir);
    assert_eq!(
        synthetic.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["bicubic", "lanczos", "tiny"]
    );
    for (_, psnr, ssim) in &synthetic {
        assert!(psnr.is_finite() && *psnr > 5.0 && *ssim <= 1.0);
    }
    // An untrained network is far worse than its own bicubic input; Lanczos is near bicubic.
    assert!(synthetic[0].1 > synthetic[2].1 + 1.0, "{synthetic:?}");
    assert!(
        (synthetic[0].1 - synthetic[1].1).abs() < 1.5,
        "{synthetic:?}"
    );

    let paired = eval(
        &[
            "--hr",
            hr.to_str().unwrap(),
            "--lr",
            lr.to_str().unwrap(),
            "--weights",
            &w,
        ],
        &dir,
    );
    // The synthesised LR is rounded to 8 bits like the saved pair: the same table.
    assert_eq!(paired, synthetic);

    let degraded = eval(
        &["--hr", hr.to_str().unwrap(), "--degrade", "default"],
        &dir,
    );
    assert_eq!(degraded.len(), 2);
    assert!(
        degraded[0].1 < synthetic[0].1,
        "the Real-ESRGAN degradation is harder"
    );
}

#[test]
fn eval_reports_the_gdpo_detail_terms_and_the_pooled_reward() {
    let dir = scratch_dir("eval-reward");
    let hr = dir.join("hr");
    std::fs::create_dir_all(&hr).unwrap();
    for (i, (w, h)) in [(64, 48), (56, 64)].into_iter().enumerate() {
        synthetic_image(w, h)
            .save(hr.join(format!("img{i}.png")))
            .unwrap();
    }
    let nss = dir.join("nss.json");
    let status = Command::new(trainer_binary())
        .args(["fit-nss", "--patch", "16", "--data"])
        .arg(&hr)
        .arg("--out")
        .arg(&nss)
        .status()
        .unwrap();
    assert!(status.success());
    let weights = dir.join("tiny.safetensors");
    init_tiny_f32(&weights);
    let (a, b) = (
        format!("a={}", weights.display()),
        format!("b={}", weights.display()),
    );
    let table = |extra: &[&str]| {
        let mut args = vec![
            "--hr",
            hr.to_str().unwrap(),
            "--nss",
            nss.to_str().unwrap(),
            "--weights",
            &a,
            "--weights",
            &b,
        ];
        args.extend_from_slice(extra);
        eval_table(&args, &dir)
    };
    let (text, rows) = table(&[]);
    assert!(
        text.contains("| nss |") && text.contains("ARF reward (pooled)"),
        "{text}"
    );
    assert_eq!(methods(&rows), ["bicubic", "lanczos", "a", "b"]);
    let reward = "ARF reward (pooled)";
    // Identical models tie on every metric, so pooled among the models (the default) each
    // gets exactly 0.5; bicubic and Lanczos are not pooled.
    for key in ["PSNR-Y (dB) ↑", "SSIM-Y ↑", "nss"] {
        assert_eq!(rows[2][key], rows[3][key], "{text}");
    }
    assert!(
        rows[0][reward].is_nan() && rows[1][reward].is_nan(),
        "{text}"
    );
    assert_eq!((rows[2][reward], rows[3][reward]), (0.5, 0.5), "{text}");
    // The term measures the images: the random network's output and bicubic score apart.
    assert_ne!(rows[0]["nss"], rows[2]["nss"], "{text}");
    // Pooled with bicubic, bicubic and the models have a reward in [0, 1].
    let (text, rows) = table(&["--reward-with-bicubic"]);
    for r in [&rows[0], &rows[2], &rows[3]] {
        assert!(
            r["nss"].is_finite() && (0.0..=1.0).contains(&r[reward]),
            "{text}"
        );
    }
}

/// Nearest-neighbour x4 of an 8-bit image: a stand-in for another upscaler's saved output.
fn nearest_x4(lr: &image::RgbImage) -> image::RgbImage {
    image::imageops::resize(
        lr,
        lr.width() * 4,
        lr.height() * 4,
        image::imageops::FilterType::Nearest,
    )
}

#[test]
fn eval_scores_saved_outputs_of_other_upscalers_on_the_lr_it_saved_and_writes_crops() {
    let dir = scratch_dir("eval-peers");
    let hr = dir.join("hr");
    std::fs::create_dir_all(&hr).unwrap();
    // Large enough for MS-SSIM (176 px after the 4 px border).
    let sizes = [(192, 188), (200, 192)];
    for (i, (w, h)) in sizes.into_iter().enumerate() {
        synthetic_image(w, h)
            .save(hr.join(format!("img{i}.png")))
            .unwrap();
    }
    let (lr, nearest, crops) = (dir.join("lr"), dir.join("nearest"), dir.join("crops"));
    let run = |extra: &[&str]| -> std::process::Output {
        Command::new(trainer_binary())
            .args(["eval", "--hr", hr.to_str().unwrap(), "--degrade", "default"])
            .args(extra)
            .arg("--out")
            .arg(dir.join("table.md"))
            .output()
            .unwrap()
    };
    let out = run(&["--save-lr", lr.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(&nearest).unwrap();
    let mut expected_psnr = 0.0;
    for (i, (w, h)) in sizes.into_iter().enumerate() {
        let small = image::open(lr.join(format!("img{i}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!((small.width() * 4, small.height() * 4), (w, h));
        let up = nearest_x4(&small);
        up.save(nearest.join(format!("img{i}.png"))).unwrap();
        let hr_img = image::open(hr.join(format!("img{i}.png")))
            .unwrap()
            .to_rgb8();
        expected_psnr += trainer_native::metrics::psnr_y(
            &Planar::from_rgb8(&up),
            &Planar::from_rgb8(&hr_img),
            4,
        ) / 2.0;
    }
    let sr = format!("nearest={}", nearest.display());
    let out = run(&[
        "--sr",
        &sr,
        "--crops",
        crops.to_str().unwrap(),
        "--crop-side",
        "64",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.join("table.md")).unwrap();
    let rows = table_rows(&text);
    assert_eq!(methods(&rows), ["bicubic", "lanczos", "nearest"], "{text}");
    // The saved outputs are scored as they are, against the same HR (the table rounds).
    assert!(
        (rows[2]["PSNR-Y (dB) ↑"] - expected_psnr).abs() < 0.006,
        "{expected_psnr}: {text}"
    );
    // Every weight-free metric scores every row; nearest neighbour is worse than bicubic.
    for r in &rows {
        for key in ["MS-SSIM ↑", "HaarPSI ↑", "GMSD ↓"] {
            assert!(r[key].is_finite() && r[key] >= 0.0, "{key}: {text}");
        }
    }
    assert!(rows[2]["HaarPSI ↑"] < rows[0]["HaarPSI ↑"], "{text}");
    assert!(rows[2]["GMSD ↓"] > rows[0]["GMSD ↓"], "{text}");
    // Crops: HR then the three rows, 64 px each, 4 px between.
    let strip = image::open(crops.join("img0.png")).unwrap().to_rgb8();
    assert_eq!((strip.width(), strip.height()), (4 * 64 + 3 * 4, 64));

    // A saved output of the wrong size, or a missing one, is a clear error naming it.
    image::RgbImage::new(8, 8)
        .save(nearest.join("img1.png"))
        .unwrap();
    let out = run(&["--sr", &sr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("img1.png") && err.contains("8x8"),
        "{err}"
    );
    std::fs::remove_file(nearest.join("img1.png")).unwrap();
    let out = run(&["--sr", &sr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no output named img1"),
        "{err}"
    );
}

#[test]
fn eval_reports_standard_niqe_and_brisque_with_the_hr_as_reference() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    let (iqa, set5) = (shared.join("iqa"), shared.join("data/eval/Set5"));
    for need in [iqa.join("niqe_pris_params.npz"), set5.join("baby.png")] {
        if !need.exists() {
            eprintln!("skipped: {} is absent (../shared)", need.display());
            return;
        }
    }
    let dir = scratch_dir("eval-standard-iqa");
    let hr = dir.join("hr");
    std::fs::create_dir_all(&hr).unwrap();
    // Natural photographs (the models describe those), 192 px crops to stay quick.
    for name in ["baby", "bird"] {
        let img = image::open(set5.join(format!("{name}.png")))
            .unwrap()
            .to_rgb8();
        image::imageops::crop_imm(&img, 48, 48, 192, 192)
            .to_image()
            .save(hr.join(format!("{name}.png")))
            .unwrap();
    }
    let (text, rows) = eval_table(
        &[
            "--hr",
            hr.to_str().unwrap(),
            "--standard-iqa",
            iqa.to_str().unwrap(),
        ],
        &dir,
    );
    assert_eq!(
        methods(&rows),
        ["HR (reference)", "bicubic", "lanczos"],
        "{text}"
    );
    // The HR has no fidelity to itself, only naturalness; every row has both scores.
    assert!(rows[0]["PSNR-Y (dB) ↑"].is_nan(), "{text}");
    for r in &rows {
        assert!(
            r["NIQE ↓"].is_finite() && (0.0..=100.0).contains(&r["BRISQUE ↓"]),
            "{text}"
        );
    }
    // Upscaling from 1/16 of the pixels loses sharpness, which both scores see.
    assert!(rows[1]["NIQE ↓"] > rows[0]["NIQE ↓"], "{text}");
    assert!(rows[1]["BRISQUE ↓"] > rows[0]["BRISQUE ↓"], "{text}");

    // A folder without the models: a clear error naming the missing file.
    let status = Command::new(trainer_binary())
        .args(["eval", "--hr", hr.to_str().unwrap(), "--standard-iqa"])
        .arg(dir.join("no-such-dir"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(
        !status.status.success() && err.contains("no-such-dir"),
        "{err}"
    );
}
