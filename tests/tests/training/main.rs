//! The training stages end to end, in process, on generated images with the `tiny` preset:
//! stage 1a (autoencoder), stage 1b (NAOSD) and GDPO.
//!
//! One test binary for all three (each integration-test binary links the whole trainer, so
//! fewer binaries build faster), apart from `contracts`: these tests train, and a training run
//! must not share the process with other burn-flex work while a bit-exact check runs.

mod autoencoder;
mod gdpo;
mod naosd;
#[cfg(feature = "tch")]
mod tch;

/// One training run at a time: two runs training concurrently in one process were seen to
/// perturb each other's last bits on burn-flex (docs/training.md, "Known limitations"), which
/// would make the bit-exact resume checks flaky for a reason outside them.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
