//! Training faults through the real CLI: a trainer SIGKILLed at random moments resumes from
//! its last complete checkpoint and ends bit-identical to an uninterrupted run (stage 1 and
//! GDPO); no checkpoint on disk is ever half-written; a NaN in a loss or a reward stops the run
//! naming the step and keeps the last good checkpoint; a full disk while saving leaves the
//! previous checkpoint intact. Faults are fired through `FAILPOINTS` (trainer_native::fault).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use integration_tests::{run_log, scratch_dir, synthetic_image, trainer_binary};
use trainer_native::train::checkpoint::CheckpointStore;

/// A small reproducible generator for the kill moments (the test must be replayable).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn make_data(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..6u32 {
        synthetic_image(40 + 4 * i, 36 + 2 * i)
            .save(dir.join(format!("img{i}.png")))
            .unwrap();
    }
}

const TRAIN: &str = "
accumulate = 1
warmup_steps = 2
weight_decay = 0.01
grad_clip = 1.0
seed = 7
checkpoint_every = 1
keep_checkpoints = 2
prefetch = 2
threads = 1
";

/// Stage 1a (autoencoder) config: a checkpoint every step, so kills land in every phase of
/// a save as well as mid-step.
fn autoencoder_config(root: &Path, steps: usize) -> PathBuf {
    let data = root.join("data");
    make_data(&data);
    let path = root.join("ae.toml");
    std::fs::write(
        &path,
        format!(
            "preset = \"tiny\"\ndata = {data:?}\ncrop = 16\n[train]\nsteps = {steps}\nbatch = 4\n\
             lr = 3e-3\nema_decay = 0.9\nvalidate_every = {steps}\n{TRAIN}"
        ),
    )
    .unwrap();
    path
}

/// GDPO config on a random tiny reference (the math does not need a trained one).
fn gdpo_config(root: &Path, steps: usize) -> PathBuf {
    let data = root.join("data");
    make_data(&data);
    let reference = root.join("reference.safetensors");
    integration_tests::init_tiny_f32(&reference);
    let path = root.join("gdpo.toml");
    std::fs::write(
        &path,
        format!(
            "reference = {reference:?}\ndata = {data:?}\ncrop = 32\ngroup = 3\n\
             [reward]\nmode = \"fidelity_only\"\n\
             [train]\nsteps = {steps}\nbatch = 2\nlr = 2e-3\nema_decay = 0.0\n\
             validate_every = {steps}\n{TRAIN}"
        ),
    )
    .unwrap();
    path
}

fn train(stage: &str, config: &Path, run_dir: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(trainer_binary());
    cmd.args([stage, "--config"])
        .arg(config)
        .arg("--run-dir")
        .arg(run_dir);
    if resume {
        cmd.arg("--resume");
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

fn logged_steps(run_dir: &Path) -> usize {
    std::fs::read_to_string(run_dir.join("log.jsonl"))
        .map(|t| t.lines().filter(|l| !l.contains("validation")).count())
        .unwrap_or(0)
}

/// Every checkpoint directory that claims to be complete loads and verifies; `latest`, if
/// present, names one of them.
fn assert_no_half_written_checkpoint(run_dir: &Path) -> usize {
    let dir = run_dir.join("checkpoints");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut complete = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // `step-N.partial` (being written) and `step-N.deleting` (being pruned) are not
        // checkpoints; every plain `step-N` must be whole.
        if name.starts_with("step-") && !name.contains('.') {
            CheckpointStore::load_dir(&path)
                .unwrap_or_else(|e| panic!("{name} is half-written: {e:#}"));
            complete += 1;
        }
    }
    if let Ok(latest) = std::fs::read_to_string(dir.join("latest")) {
        assert!(dir.join(latest.trim()).is_dir(), "latest -> {latest}");
    }
    complete
}

/// Waits until the run has logged `steps` steps, plus a random few milliseconds, then
/// SIGKILLs it. Returns false when the run ended first.
fn kill_after(child: &mut Child, run_dir: &Path, steps: usize, extra_ms: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(300);
    while logged_steps(run_dir) < steps {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "the run stalled");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(extra_ms));
    if child.try_wait().unwrap().is_some() {
        return false;
    }
    child.kill().unwrap(); // SIGKILL on Unix: no handler runs, nothing is flushed.
    child.wait().unwrap();
    true
}

fn step_losses(run_dir: &Path) -> Vec<(u64, f64)> {
    run_log(run_dir)
        .iter()
        .filter(|v| v.get("validation").is_none())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

fn kill_resume_matches_uninterrupted(
    stage: &str,
    config: &Path,
    root: &Path,
    steps: usize,
    seed: u64,
) {
    let out_name = format!("{stage}.safetensors");
    let straight = root.join("straight");
    let done = train(stage, config, &straight, false).output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );

    let killed = root.join("killed");
    let mut rng = Lcg(seed);
    let mut kills = 0;
    for attempt in 0..4 {
        let mut child = train(stage, config, &killed, attempt > 0).spawn().unwrap();
        let target = logged_steps(&killed) + 1 + rng.below(steps as u64 / 4) as usize;
        if target >= steps || !kill_after(&mut child, &killed, target, rng.below(40)) {
            let _ = child.kill();
            child.wait().unwrap();
            break;
        }
        kills += 1;
        assert_no_half_written_checkpoint(&killed);
    }
    assert!(kills >= 2, "only {kills} kills landed during training");
    let finish = train(stage, config, &killed, true).output().unwrap();
    assert!(
        finish.status.success(),
        "{}",
        String::from_utf8_lossy(&finish.stderr)
    );
    assert!(assert_no_half_written_checkpoint(&killed) > 0);

    let (a, b) = (
        std::fs::read(straight.join(&out_name)).unwrap(),
        std::fs::read(killed.join(&out_name)).unwrap(),
    );
    assert!(
        a == b,
        "{stage}: the resumed weights differ from the uninterrupted run's"
    );
    // The log reads like the uninterrupted one: every step once, the same losses.
    assert_eq!(step_losses(&straight), step_losses(&killed));
}

#[test]
fn stage1_killed_at_random_moments_resumes_bit_identically() {
    let root = scratch_dir("crash-ae");
    let config = autoencoder_config(&root, 24);
    kill_resume_matches_uninterrupted("autoencoder", &config, &root, 24, 0x5eed);
}

#[test]
fn gdpo_killed_at_random_moments_resumes_bit_identically() {
    let root = scratch_dir("crash-gdpo");
    let config = gdpo_config(&root, 16);
    kill_resume_matches_uninterrupted("gdpo", &config, &root, 16, 0xfeed);
}

/// Runs `cmd` with the fault points `fault` set, expects it to stop with exit code 1 (an
/// error, not a panic) and every one of `needles` in its message.
fn stops_with_fault(mut cmd: Command, fault: &str, needles: &[&str]) {
    let out = cmd.env("FAILPOINTS", fault).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "`{needle}` missing from: {stderr}");
    }
}

/// The step of the newest complete checkpoint.
fn latest_checkpoint_step(run_dir: &Path) -> usize {
    let store = CheckpointStore::new(run_dir.join("checkpoints"), 100).unwrap();
    store.latest().unwrap().expect("a checkpoint").meta.step
}

#[test]
fn a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint() {
    let root = scratch_dir("nan-loss");
    let config = autoencoder_config(&root, 10);
    let run_dir = root.join("run");
    // The fifth evaluation (step 5) gets a NaN loss.
    stops_with_fault(
        train("autoencoder", &config, &run_dir, false),
        "train-loss-nan=4*off->1*return->off",
        &["non-finite loss = NaN", "at step 5"],
    );
    assert_eq!(latest_checkpoint_step(&run_dir), 4);
    assert!(
        !run_dir.join("autoencoder.safetensors").exists(),
        "no output from a broken run"
    );
    // The kept checkpoint is good: resuming without the fault finishes like a clean run.
    let resumed = train("autoencoder", &config, &run_dir, true)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let clean = root.join("clean");
    assert!(
        train("autoencoder", &config, &clean, false)
            .output()
            .unwrap()
            .status
            .success()
    );
    assert_eq!(
        std::fs::read(run_dir.join("autoencoder.safetensors")).unwrap(),
        std::fs::read(clean.join("autoencoder.safetensors")).unwrap()
    );
}

#[test]
fn a_nan_reward_stops_gdpo_naming_the_step() {
    let root = scratch_dir("nan-reward");
    let config = gdpo_config(&root, 6);
    let run_dir = root.join("run");
    stops_with_fault(
        train("gdpo", &config, &run_dir, false),
        "gdpo-reward-nan=2*off->1*return->off",
        &["reward_mean = NaN", "at step 3"],
    );
    assert_eq!(latest_checkpoint_step(&run_dir), 2);
}

#[test]
fn a_full_disk_while_saving_keeps_the_previous_checkpoint() {
    let root = scratch_dir("disk-full");
    let config = autoencoder_config(&root, 10);
    let run_dir = root.join("run");
    // A checkpoint is 4 file writes plus the `latest` pointer: the 11th write is the first
    // file of the third checkpoint.
    stops_with_fault(
        train("autoencoder", &config, &run_dir, false),
        "checkpoint-disk-full=10*off->1*return->off",
        &["No space left on device", "step-0000003"],
    );
    assert_eq!(latest_checkpoint_step(&run_dir), 2);
    assert_eq!(assert_no_half_written_checkpoint(&run_dir), 2);
    assert!(!run_dir.join("checkpoints/step-0000003.partial").exists());
    let resumed = train("autoencoder", &config, &run_dir, true)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}
