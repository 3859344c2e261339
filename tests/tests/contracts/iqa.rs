//! The native image-quality metrics (`trainer_native::iqa`) against independent references:
//! NIQE against the numpy implementation of `tests/iqa/niqe_ref.py`, BRISQUE against OpenCV
//! contrib's `cv2.quality.QualityBRISQUE_compute` (PyPI `opencv-contrib-python-headless`),
//! both run by the `.venv-iqa` interpreter (`tests/iqa/setup-venv.sh`) on PNGs written here;
//! then edge cases and the direction of both scores under blur and noise.
//!
//! The standard models live outside the repository (`../shared/iqa`) and the natural images in
//! `../shared/data/eval`: each test that needs one skips, saying so, when it is absent.
//!
//! `cargo test -p integration-tests --test contracts iqa -- --nocapture` prints the agreement
//! table quoted in docs/quality.md.

use std::path::{Path, PathBuf};

use integration_tests::{scratch_dir, synthetic_image};
use trainer_native::{
    degrade::{
        kernels::bivariate_gaussian,
        ops::{Interp, filter2d, jpeg, resize},
    },
    iqa::{Brisque, Niqe},
    planar::Planar,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// `../shared/iqa` with both models, or `None` (the reason printed).
fn models() -> Option<PathBuf> {
    let dir = repo_root().join("../shared/iqa");
    for f in [
        trainer_native::iqa::NIQE_PARAMS,
        trainer_native::iqa::BRISQUE_MODEL,
        trainer_native::iqa::BRISQUE_RANGE,
    ] {
        if !f.path(&dir).exists() {
            eprintln!(
                "skipped: the IQA model {} is absent (../shared/iqa/README.md)",
                f.path(&dir).display()
            );
            return None;
        }
    }
    Some(dir)
}

/// The reference interpreter, or `None` (the reason printed).
fn venv_python() -> Option<PathBuf> {
    let python = repo_root().join(".venv-iqa/bin/python");
    if python.exists() {
        Some(python)
    } else {
        eprintln!(
            "skipped: {} is absent (run tests/iqa/setup-venv.sh)",
            python.display()
        );
        None
    }
}

fn eval_images(set: &str) -> Vec<PathBuf> {
    let dir = repo_root().join("../shared/data/eval").join(set);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "png"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn load(path: &Path) -> Planar {
    Planar::from_rgb8(&trainer_native::image_io::decode_rgb8(path).expect("decode"))
}

fn blur(img: &Planar, sigma: f64) -> Planar {
    let size = 2 * (3.0 * sigma).ceil() as usize + 1;
    filter2d(img, &bivariate_gaussian(size, sigma, sigma, 0.0))
}

/// Deterministic Gaussian noise of standard deviation `sigma` (in [0, 1] units), clipped.
fn noise(img: &Planar, sigma: f32, seed: u64) -> Planar {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut out = img.clone();
    for v in &mut out.data {
        let n = (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
        *v = (*v + sigma * n as f32).clamp(0.0, 1.0);
    }
    out
}

fn down_up(img: &Planar, factor: usize) -> Planar {
    let small = resize(
        img,
        img.width / factor,
        img.height / factor,
        Interp::Bicubic,
    );
    resize(&small, img.width, img.height, Interp::Bicubic)
}

fn crop(img: &Planar, w: usize, h: usize) -> Planar {
    img.crop(0, 0, w.min(img.width), h.min(img.height))
}

/// A textured grey image: R = G = B.
fn grey(w: usize, h: usize) -> Planar {
    let mut p = noise(
        &Planar::from_rgb8(&synthetic_image(w as u32, h as u32)),
        0.03,
        5,
    );
    let n = w * h;
    for i in 0..n {
        let g = 0.299 * p.data[i] + 0.587 * p.data[n + i] + 0.114 * p.data[2 * n + i];
        for c in 0..3 {
            p.data[c * n + i] = g;
        }
    }
    p
}

/// The comparison set: natural images of Set5 and Set14 (when present), degraded versions
/// (blur, noise, JPEG, x4 down-up, odd crops) and generated textures, at least 20 in all.
fn comparison_set() -> Vec<(String, Planar)> {
    let mut set: Vec<(String, Planar)> = Vec::new();
    let natural: Vec<PathBuf> = eval_images("Set5")
        .into_iter()
        .chain(eval_images("Set14"))
        .collect();
    if natural.is_empty() {
        eprintln!("note: ../shared/data/eval is absent, generated images only");
    }
    for (i, path) in natural.iter().enumerate() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let img = load(path);
        if i % 3 == 0 {
            set.push((format!("{name}-blur1.5"), blur(&img, 1.5)));
            set.push((
                format!("{name}-noise10"),
                noise(&img, 10.0 / 255.0, i as u64),
            ));
        }
        if i % 3 == 1 {
            let q = jpeg(&img, 15).expect("jpeg");
            set.push((format!("{name}-jpeg15"), q));
            set.push((format!("{name}-downup4"), down_up(&img, 4)));
        }
        if i % 3 == 2 {
            // Odd sizes: the half scales round down (BRISQUE) and up (NIQE).
            let odd = |n: usize| if n.is_multiple_of(2) { n - 1 } else { n - 2 };
            set.push((
                format!("{name}-crop-odd"),
                crop(&img, odd(img.width), odd(img.height)),
            ));
        }
        set.push((name, img));
    }
    for (w, h) in [(256, 256), (321, 203), (200, 288)] {
        let base = Planar::from_rgb8(&synthetic_image(w, h));
        set.push((
            format!("synthetic-{w}x{h}-noise"),
            noise(&base, 0.05, w.into()),
        ));
        set.push((
            format!("synthetic-{w}x{h}-blur-noise"),
            noise(&blur(&base, 2.0), 0.02, h.into()),
        ));
    }
    set.push(("grey-240x200".into(), grey(240, 200)));
    let mut mid_grey = Planar::zeros(192, 192);
    mid_grey.data.iter_mut().for_each(|v| *v = 0.5);
    set.push(("noise-192".into(), noise(&mid_grey, 0.15, 9)));
    set
}

#[derive(Debug, Default)]
struct Reference {
    niqe: Option<f64>,
    brisque: Option<f64>,
    brisque_portable: Option<f64>,
}

fn run_reference(python: &Path, models: &Path, files: &[PathBuf]) -> Vec<Reference> {
    let out = std::process::Command::new(python)
        .arg(repo_root().join("tests/iqa/reference.py"))
        .arg(models)
        .args(files)
        .output()
        .expect("run tests/iqa/reference.py");
    assert!(
        out.status.success(),
        "reference.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Reference> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            Reference {
                niqe: v["niqe"].as_f64(),
                brisque: v["brisque"].as_f64(),
                brisque_portable: v["brisque_portable"].as_f64(),
            }
        })
        .collect();
    assert_eq!(rows.len(), files.len(), "one reference row per image");
    rows
}

fn mean_max(diffs: &[f64]) -> (f64, f64) {
    let mean = diffs.iter().sum::<f64>() / diffs.len().max(1) as f64;
    (mean, diffs.iter().copied().fold(0.0, f64::max))
}

#[test]
fn iqa_scores_match_the_python_references() {
    let (Some(dir), Some(python)) = (models(), venv_python()) else {
        return;
    };
    let niqe = Niqe::load(&dir).expect("NIQE model");
    let brisque = Brisque::load(&dir).expect("BRISQUE model");
    let scratch = scratch_dir("iqa-reference");
    let set = comparison_set();
    assert!(set.len() >= 20, "{} images", set.len());
    let files: Vec<PathBuf> = set
        .iter()
        .map(|(name, img)| {
            let path = scratch.join(format!("{name}.png"));
            img.to_rgb8().save(&path).expect("write png");
            path
        })
        .collect();
    let reference = run_reference(&python, &dir, &files);
    let (mut d_niqe, mut d_brisque, mut d_portable) = (vec![], vec![], vec![]);
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "image", "niqe", "niqe ref", "brisque", "cv2", "cv2 -ipp"
    );
    for ((name, img), r) in set.iter().zip(&reference) {
        // Scored from the PNG's 8-bit values, as the reference reads them.
        let img = Planar::from_rgb8(&img.to_rgb8());
        let n = niqe.score(&img).expect("NIQE");
        let b = brisque.score(&img).expect("BRISQUE");
        let (rn, rb, rp) = (
            r.niqe.expect("reference NIQE"),
            r.brisque.expect("cv2 BRISQUE"),
            r.brisque_portable.expect("cv2 BRISQUE without IPP"),
        );
        println!("{name:<28} {n:>9.4} {rn:>9.4} {b:>9.4} {rb:>9.4} {rp:>9.4}");
        d_niqe.push((n - rn).abs());
        d_brisque.push((b - rb).abs());
        d_portable.push((b - rp).abs());
    }
    let (niqe_mean, niqe_max) = mean_max(&d_niqe);
    let (brisque_mean, brisque_max) = mean_max(&d_brisque);
    let (portable_mean, portable_max) = mean_max(&d_portable);
    println!(
        "{} images: NIQE vs niqe_ref.py mean |diff| {niqe_mean:.2e} (max {niqe_max:.2e}); \
         BRISQUE vs cv2 mean |diff| {brisque_mean:.2e} (max {brisque_max:.2e}), \
         vs cv2 without IPP {portable_mean:.2e} (max {portable_max:.2e})",
        set.len()
    );
    assert!(niqe_mean <= 0.05 && niqe_max <= 0.2, "NIQE disagrees");
    assert!(brisque_mean <= 0.5, "BRISQUE disagrees with OpenCV");
    assert!(
        portable_mean <= 0.01 && portable_max <= 0.05,
        "BRISQUE disagrees with OpenCV's portable arithmetic"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn iqa_edge_cases_are_clear_errors_never_nan() {
    let Some(dir) = models() else { return };
    let niqe = Niqe::load(&dir).expect("NIQE model");
    let brisque = Brisque::load(&dir).expect("BRISQUE model");
    let flat = |w: usize, h: usize, v: f32| Planar {
        width: w,
        height: h,
        data: vec![v; 3 * w * h],
    };
    // Flat: no texture, no score.
    for img in [flat(200, 150, 0.5), flat(96, 96, 0.0), flat(120, 100, 1.0)] {
        let e = niqe.score(&img).unwrap_err().to_string();
        assert!(e.contains("flat"), "{e}");
        let e = brisque.score(&img).unwrap_err().to_string();
        assert!(e.contains("flat"), "{e}");
    }
    // Tiny: NIQE needs one 96x96 block; BRISQUE scores anything from 2x2 but not 1xN.
    let small = Planar::from_rgb8(&synthetic_image(95, 120));
    let e = niqe.score(&small).unwrap_err().to_string();
    assert!(e.contains("at least 96x96") && e.contains("95x120"), "{e}");
    assert!(brisque.score(&small).unwrap().is_finite());
    assert!(
        brisque
            .score(&Planar::from_rgb8(&synthetic_image(1, 9)))
            .is_err()
    );
    assert!(niqe.score(&Planar::zeros(0, 0)).is_err());
    assert!(brisque.score(&Planar::zeros(0, 0)).is_err());
    // Exactly one block: the distorted covariance is zero, the score finite.
    let one = noise(&Planar::from_rgb8(&synthetic_image(96, 96)), 0.05, 3);
    assert!(niqe.score(&one).unwrap().is_finite());
    // Grey (R = G = B) and half-flat images score finitely.
    let g = grey(200, 200);
    assert!(niqe.score(&g).unwrap().is_finite());
    assert!(brisque.score(&g).unwrap().is_finite());
    let mut half = grey(256, 192);
    for c in 0..3 {
        for y in 0..192 {
            for x in 128..256 {
                *half.get_mut(c, x, y) = 0.25;
            }
        }
    }
    assert!(niqe.score(&half).unwrap().is_finite());
    assert!(brisque.score(&half).unwrap().is_finite());
    // Out-of-range and non-finite pixels are quantised like Planar::to_rgb8 (clamped, NaN to
    // 0): finite scores, no NaN.
    let mut odd = Planar::from_rgb8(&synthetic_image(160, 128));
    odd.data[10] = f32::NAN;
    odd.data[20] = f32::INFINITY;
    odd.data[30] = -4.0;
    odd.data[40] = 7.0;
    assert!(niqe.score(&odd).unwrap().is_finite());
    assert!(brisque.score(&odd).unwrap().is_finite());
    assert!(brisque.raw_score(&odd).unwrap().is_finite());
}

#[test]
fn iqa_blur_and_noise_make_both_scores_worse() {
    let Some(dir) = models() else { return };
    let Some(path) = eval_images("Set5").into_iter().next() else {
        eprintln!("skipped: ../shared/data/eval/Set5 is absent");
        return;
    };
    let niqe = Niqe::load(&dir).expect("NIQE model");
    let brisque = Brisque::load(&dir).expect("BRISQUE model");
    let img = load(&path);
    let scores = |p: &Planar| (niqe.score(p).unwrap(), brisque.score(p).unwrap());
    let t = std::time::Instant::now();
    let n0 = niqe.score(&img).unwrap();
    let t_niqe = t.elapsed();
    let t = std::time::Instant::now();
    let b0 = brisque.score(&img).unwrap();
    println!(
        "{}x{}: NIQE {:.0} ms, BRISQUE {:.0} ms (this build's profile)",
        img.width,
        img.height,
        t_niqe.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );
    for (what, degraded) in [
        ("blur sigma 1", blur(&img, 1.0)),
        ("blur sigma 2.5", blur(&img, 2.5)),
        ("noise 15/255", noise(&img, 15.0 / 255.0, 1)),
        ("noise 40/255", noise(&img, 40.0 / 255.0, 2)),
    ] {
        let (n, b) = scores(&degraded);
        println!(
            "{}: {what}: NIQE {n0:.3} -> {n:.3}, BRISQUE {b0:.3} -> {b:.3}",
            path.display()
        );
        assert!(n > n0, "{what}: NIQE {n0} -> {n}");
        assert!(b > b0, "{what}: BRISQUE {b0} -> {b}");
    }
}
