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
