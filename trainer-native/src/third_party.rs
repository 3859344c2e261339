//! Third-party data files (pretrained weights, image-quality models): read from `../shared`
//! (never copied into the project), each checked against the SHA-256 its README lists, with an
//! error that names the path, the expected hash and where the file is described.

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use sha2::{Digest, Sha256};

/// One file and the hash it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThirdPartyFile {
    pub name: &'static str,
    pub sha256: &'static str,
    /// What the file is, for messages ("the pretrained TAEF2 encoder").
    pub what: &'static str,
    /// Where it is described or comes from, for messages.
    pub described_in: &'static str,
}

impl ThirdPartyFile {
    /// `dir/name`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(self.name)
    }

    /// The file's bytes, after checking its SHA-256.
    ///
    /// # Errors
    /// When the file is missing or unreadable (the message names the path, the expected hash
    /// and [`Self::described_in`]) or its content is not the expected one.
    pub fn read(&self, dir: &Path) -> anyhow::Result<Vec<u8>> {
        let path = self.path(dir);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {} {} (expected sha256 {}; {})",
                self.what,
                path.display(),
                self.sha256,
                self.described_in
            )
        })?;
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        ensure!(
            digest == self.sha256,
            "{} has sha256 {digest}, expected {} (a different or damaged file)",
            path.display(),
            self.sha256
        );
        Ok(bytes)
    }
}
