//! Crash-safe checkpoints.
//!
//! A checkpoint is a directory `step-000123/` holding named binary parts (model, optimizer,
//! EMA, ...) and `meta.toml` with the step, free-form run state and the SHA-256 of every part.
//! It is written as `step-000123.partial/`, every file fsynced, then renamed into place and the
//! `latest` pointer replaced by write-then-rename. A process killed at any moment therefore
//! leaves either the previous checkpoint or the new one, never a half-written one; loading
//! verifies the hashes and falls back to the newest intact checkpoint.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What `meta.toml` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Optimizer steps completed.
    pub step: usize,
    /// Run state that is not a tensor (e.g. the latent scale), as strings.
    pub state: BTreeMap<String, String>,
    /// Part name -> `sha256:<hex>` of its bytes.
    pub parts: BTreeMap<String, String>,
}

/// A verified checkpoint read back from disk.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    pub meta: CheckpointMeta,
    pub parts: BTreeMap<String, Vec<u8>>,
    pub dir: PathBuf,
}

/// The checkpoints of one run, in one directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    /// Complete checkpoints kept (older ones are deleted after a successful save).
    keep: usize,
}

fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    if crate::fault::fires(crate::fault::DISK_FULL) {
        // What a full disk does: part of the file lands, then the write fails.
        f.write_all(&bytes[..bytes.len() / 2])?;
        return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
    }
    f.write_all(bytes)?;
    f.sync_all()
}

/// Deletes a checkpoint directory so that no kill can leave it half-deleted under its own
/// name: it is renamed out of the `step-N` namespace first (atomic), then removed.
fn discard(dir: &Path) -> std::io::Result<()> {
    let mut doomed = dir.as_os_str().to_owned();
    doomed.push(".deleting");
    let doomed = PathBuf::from(doomed);
    let _ = fs::remove_dir_all(&doomed);
    fs::rename(dir, &doomed)?;
    fs::remove_dir_all(&doomed)
}

fn sync_dir(dir: &Path) {
    // Makes the renames durable; not supported everywhere, and harmless to skip.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

impl CheckpointStore {
    /// A store in `dir` (created if needed) keeping the newest `keep` checkpoints.
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> anyhow::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self {
            dir,
            keep: keep.max(1),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn step_dir(&self, step: usize) -> PathBuf {
        self.dir.join(format!("step-{step:07}"))
    }

    /// Writes a checkpoint atomically; on error nothing visible changes (the previous
    /// checkpoint stays the latest).
    ///
    /// # Errors
    /// IO errors (disk full, permissions), with the path.
    pub fn save(
        &self,
        step: usize,
        state: BTreeMap<String, String>,
        parts: &[(&str, Vec<u8>)],
    ) -> anyhow::Result<PathBuf> {
        let final_dir = self.step_dir(step);
        let tmp_dir = self.dir.join(format!("step-{step:07}.partial"));
        let _ = fs::remove_dir_all(&tmp_dir);
        let result = (|| -> anyhow::Result<()> {
            fs::create_dir_all(&tmp_dir)?;
            let mut hashes = BTreeMap::new();
            for (name, bytes) in parts {
                anyhow::ensure!(
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad part name `{name}`"
                );
                write_synced(&tmp_dir.join(format!("{name}.bin")), bytes)?;
                hashes.insert(name.to_string(), sha256(bytes));
            }
            let meta = CheckpointMeta {
                step,
                state,
                parts: hashes,
            };
            write_synced(
                &tmp_dir.join("meta.toml"),
                toml::to_string(&meta)?.as_bytes(),
            )?;
            sync_dir(&tmp_dir);
            if final_dir.exists() {
                discard(&final_dir)?;
            }
            fs::rename(&tmp_dir, &final_dir)?;
            sync_dir(&self.dir);
            let pointer = self.dir.join("latest.partial");
            write_synced(
                &pointer,
                final_dir.file_name().expect("named").as_encoded_bytes(),
            )?;
            fs::rename(&pointer, self.dir.join("latest"))?;
            sync_dir(&self.dir);
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp_dir);
            let _ = fs::remove_file(self.dir.join("latest.partial"));
            return Err(e)
                .with_context(|| format!("cannot write checkpoint {}", final_dir.display()));
        }
        self.prune();
        Ok(final_dir)
    }

    /// Complete checkpoint directories, oldest first.
    fn complete_dirs(&self) -> Vec<(usize, PathBuf)> {
        let mut dirs: Vec<(usize, PathBuf)> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let step = name.strip_prefix("step-")?.parse().ok()?;
                Some((step, e.path()))
            })
            .collect();
        dirs.sort();
        dirs
    }

    fn prune(&self) {
        let dirs = self.complete_dirs();
        for (_, dir) in dirs.iter().take(dirs.len().saturating_sub(self.keep)) {
            let _ = discard(dir);
        }
        // Leftovers of runs killed mid-save or mid-delete.
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if (name.ends_with(".partial") || name.ends_with(".deleting")) && e.path().is_dir() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    /// Reads and verifies one checkpoint directory.
    ///
    /// # Errors
    /// Missing files or a part whose hash does not match.
    pub fn load_dir(dir: &Path) -> anyhow::Result<LoadedCheckpoint> {
        let meta: CheckpointMeta = toml::from_str(
            &fs::read_to_string(dir.join("meta.toml"))
                .with_context(|| format!("{}: no meta.toml", dir.display()))?,
        )
        .with_context(|| format!("{}: bad meta.toml", dir.display()))?;
        let mut parts = BTreeMap::new();
        for (name, hash) in &meta.parts {
            let bytes = fs::read(dir.join(format!("{name}.bin")))
                .with_context(|| format!("{}: part {name}", dir.display()))?;
            if &sha256(&bytes) != hash {
                bail!(
                    "{}: part `{name}` is corrupted (hash mismatch)",
                    dir.display()
                );
            }
            parts.insert(name.clone(), bytes);
        }
        Ok(LoadedCheckpoint {
            meta,
            parts,
            dir: dir.to_path_buf(),
        })
    }

    /// The newest intact checkpoint, if any (a corrupted newest one is skipped with a warning).
    ///
    /// # Errors
    /// Only when checkpoints exist but none is intact.
    pub fn latest(&self) -> anyhow::Result<Option<LoadedCheckpoint>> {
        let dirs = self.complete_dirs();
        let mut last_error = None;
        for (_, dir) in dirs.iter().rev() {
            match Self::load_dir(dir) {
                Ok(ckpt) => return Ok(Some(ckpt)),
                Err(e) => {
                    tracing::warn!("skipping checkpoint: {e:#}");
                    last_error = Some(e);
                }
            }
        }
        match last_error {
            Some(e) => Err(e.context("no intact checkpoint")),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str, keep: usize) -> CheckpointStore {
        let dir = std::env::temp_dir().join(format!("gdpo-ckpt-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        CheckpointStore::new(dir, keep).unwrap()
    }

    #[test]
    fn save_load_prune() {
        let s = store("basic", 2);
        assert!(s.latest().unwrap().is_none());
        for step in [10, 20, 30] {
            let state = BTreeMap::from([("k".to_string(), format!("{step}"))]);
            s.save(
                step,
                state,
                &[("model", vec![step as u8; 100]), ("optim", vec![1, 2, 3])],
            )
            .unwrap();
        }
        let latest = s.latest().unwrap().unwrap();
        assert_eq!(latest.meta.step, 30);
        assert_eq!(latest.parts["model"], vec![30u8; 100]);
        assert_eq!(latest.meta.state["k"], "30");
        assert_eq!(s.complete_dirs().len(), 2, "keeps two");
        fs::remove_dir_all(s.dir()).unwrap();
    }

    #[test]
    fn corrupted_or_half_written_checkpoints_fall_back() {
        let s = store("corrupt", 3);
        s.save(1, BTreeMap::new(), &[("model", vec![1; 64])])
            .unwrap();
        s.save(2, BTreeMap::new(), &[("model", vec![2; 64])])
            .unwrap();
        // Flip a byte of the newest part: it is skipped.
        let part = s.dir().join("step-0000002/model.bin");
        let mut bytes = fs::read(&part).unwrap();
        bytes[5] ^= 1;
        fs::write(&part, bytes).unwrap();
        assert_eq!(s.latest().unwrap().unwrap().meta.step, 1);
        // A save killed before its rename leaves only a .partial directory: ignored.
        fs::create_dir_all(s.dir().join("step-0000003.partial")).unwrap();
        fs::write(s.dir().join("step-0000003.partial/model.bin"), b"half").unwrap();
        assert_eq!(s.latest().unwrap().unwrap().meta.step, 1);
        fs::remove_dir_all(s.dir()).unwrap();
    }

    #[test]
    fn a_failed_save_leaves_the_previous_checkpoint() {
        let s = store("fail", 3);
        s.save(1, BTreeMap::new(), &[("model", vec![1; 8])])
            .unwrap();
        assert!(
            s.save(2, BTreeMap::new(), &[("bad/name", vec![2; 8])])
                .is_err()
        );
        let latest = s.latest().unwrap().unwrap();
        assert_eq!(latest.meta.step, 1);
        assert!(!s.dir().join("step-0000002.partial").exists());
        fs::remove_dir_all(s.dir()).unwrap();
    }
}
