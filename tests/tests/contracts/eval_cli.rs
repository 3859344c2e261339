//! `trainer-native eval`: the table compares bicubic with each weight file, on synthesised LR
//! and on real LR/HR pairs.

use std::{path::Path, process::Command};

use integration_tests::{init_tiny_f32, scratch_dir, synthetic_image, trainer_binary};
use trainer_native::{eval::downscale_antialiased, planar::Planar};

/// `(method, psnr, ssim)` rows of the Markdown table.
fn rows(table: &str) -> Vec<(String, f64, f64)> {
    table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| method"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (
                cells[0].to_string(),
                cells[1].parse().unwrap(),
                cells[2].parse().unwrap(),
            )
        })
        .collect()
}

fn eval(args: &[&str], dir: &Path) -> Vec<(String, f64, f64)> {
    let out = dir.join("table.md");
    let status = Command::new(trainer_binary())
        .arg("eval")
        .args(args)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    rows(&std::fs::read_to_string(out).unwrap())
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
        ["bicubic", "tiny"]
    );
    for (_, psnr, ssim) in &synthetic {
        assert!(psnr.is_finite() && *psnr > 5.0 && *ssim <= 1.0);
    }
    // An untrained network is far worse than its own bicubic input.
    assert!(synthetic[0].1 > synthetic[1].1 + 1.0, "{synthetic:?}");

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
    // Only the 8-bit rounding of the saved LR differs.
    assert!(
        (paired[0].1 - synthetic[0].1).abs() < 0.1,
        "{paired:?} vs {synthetic:?}"
    );

    let degraded = eval(
        &["--hr", hr.to_str().unwrap(), "--degrade", "default"],
        &dir,
    );
    assert_eq!(degraded.len(), 1);
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
    let table = |extra: &[&str]| -> (String, Vec<Vec<f64>>) {
        let out = dir.join("table.md");
        let status = Command::new(trainer_binary())
            .args([
                "eval",
                "--hr",
                hr.to_str().unwrap(),
                "--nss",
                nss.to_str().unwrap(),
            ])
            .args(["--weights", &format!("a={}", weights.display())])
            .args(["--weights", &format!("b={}", weights.display())])
            .args(extra)
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        let text = std::fs::read_to_string(out).unwrap();
        let rows = text
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| method"))
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .skip(1)
                    .map(|c| c.trim().parse().unwrap_or(f64::NAN))
                    .collect()
            })
            .collect();
        (text, rows)
    };
    let (text, rows) = table(&[]);
    assert!(
        text.contains("| nss |") && text.contains("ARF reward (pooled)"),
        "{text}"
    );
    assert_eq!(rows.len(), 3);
    // Columns: PSNR-Y, SSIM-Y, nss, reward, time. Identical models tie on every metric, so
    // pooled among the models (the default) each gets exactly 0.5; bicubic is not pooled.
    assert_eq!(rows[1][..3], rows[2][..3]);
    assert!(rows[0][3].is_nan(), "{text}");
    assert_eq!((rows[1][3], rows[2][3]), (0.5, 0.5), "{text}");
    // The term measures the images: the random network's output and bicubic score apart.
    assert_ne!(rows[0][2], rows[1][2], "{rows:?}");
    // Pooled with bicubic, every method has a reward in [0, 1].
    let (text, rows) = table(&["--reward-with-bicubic"]);
    for r in &rows {
        assert!(r[2].is_finite() && (0.0..=1.0).contains(&r[3]), "{text}");
    }
}
