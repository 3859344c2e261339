//! Shared helpers of the integration tests (the tests themselves are in `tests/tests/`).

use std::path::PathBuf;

/// A fresh, empty scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gdpo-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The `trainer-native` binary built by the same `cargo test` run.
pub fn trainer_binary() -> PathBuf {
    // target/<profile>/deps/<test-exe> -> target/<profile>/trainer-native
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let bin = profile_dir.join(format!("trainer-native{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not built: run the tests through `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A deterministic synthetic RGB test image (smooth gradients plus a checker), no third-party data.
pub fn synthetic_image(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        let checker = if (x / 3 + y / 3) % 2 == 0 { 40 } else { 0 };
        image::Rgb([
            (x * 255 / width.max(1)) as u8 / 2 + checker,
            (y * 255 / height.max(1)) as u8 / 2 + checker,
            ((x + y) * 97 % 200) as u8,
        ])
    })
}

/// Every line of a training run's JSON-lines log (`RUN_DIR/log.jsonl`), steps and validations.
pub fn run_log(run_dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("log.jsonl"))
        .expect("the run's log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect()
}

/// Runs the CLI's `upscale` of `input` (a file or folder) into `output` with `weights`, plus
/// `extra` arguments, and returns what it did.
pub fn run_upscale(
    weights: &std::path::Path,
    input: &std::path::Path,
    output: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    std::process::Command::new(trainer_binary())
        .args(["upscale", "--weights"])
        .arg(weights)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .expect("run trainer-native upscale")
}

/// Random `tiny` weights written by the CLI's `init --f32` into `path`.
pub fn init_tiny_f32(path: &std::path::Path) {
    let status = std::process::Command::new(trainer_binary())
        .args(["init", "--preset", "tiny", "--f32", "--out"])
        .arg(path)
        .status()
        .expect("run trainer-native init");
    assert!(status.success(), "trainer-native init failed");
}

/// Largest absolute difference between the tensors of two f32 weight files of one
/// architecture.
pub fn max_weight_diff(a: &std::path::Path, b: &std::path::Path) -> f32 {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let values = |bytes: &[u8]| -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut worst = 0.0f32;
    for (name, ta) in a.tensors() {
        let tb = b.tensor(&name).unwrap();
        for (x, y) in values(ta.data()).iter().zip(values(tb.data())) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}
