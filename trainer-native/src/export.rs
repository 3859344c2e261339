//! Writing weight files: atomically (write, fsync, rename), so an interrupted export never
//! leaves a partial file where a reader expects a complete one.

use std::{fs, io::Write, path::Path};

use anyhow::Context;
use burn::tensor::backend::Backend;
use model::{ModelConfig, Naosd, StoredPrecision, save_trained_part, save_weights};

use crate::{backend::BackendTask, pretrained};

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
///
/// # Errors
/// When the file cannot be written or renamed; `path` is then left as it was.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp_name = path
        .file_name()
        .context("output path has no file name")?
        .to_os_string();
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Reads and loads a weight file from disk (the error names the file). A trained-part file
/// (the committed UNet of the shipped model, [`model::save_trained_part`]) is composed with
/// the pretrained TAEF2 autoencoder from [`pretrained::taef2_dir`].
///
/// # Errors
/// IO errors, every [`model::ModelError`] of the loader, missing or altered TAEF2 files.
pub fn read_weights<B: Backend>(path: &Path, device: &B::Device) -> anyhow::Result<Naosd<B>> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let info = model::read_weight_info(&bytes).with_context(|| path.display().to_string())?;
    if info.trained_part.is_none() {
        return model::load_weights::<B>(&bytes, device)
            .with_context(|| path.display().to_string());
    }
    let base = pretrained::load_taef2(info.config.init::<B>(device)?, &pretrained::taef2_dir())
        .with_context(|| format!("composing {}", path.display()))?;
    model::load_trained_part(&bytes, base).with_context(|| path.display().to_string())
}

/// Writes the starting weight file of a preset. `taef2`: the pretrained TAEF2 autoencoder
/// and a UNet whose output layer is zero, so that the model starts at the bicubic-level
/// `D(E(LRup))` (the start of NAOSD training); other presets: random weights (tests).
pub struct InitWeights<'a> {
    pub preset: &'a str,
    pub out: &'a Path,
    pub precision: StoredPrecision,
}

impl BackendTask for InitWeights<'_> {
    type Output = usize;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<usize> {
        let config = ModelConfig::preset(self.preset)?;
        let model = config.init::<B>(&device)?;
        let model = if config == ModelConfig::taef2() {
            pretrained::load_taef2(model, &pretrained::taef2_dir())?.with_zero_correction()
        } else {
            model
        };
        let bytes = save_weights(&model, self.precision)?;
        write_atomically(self.out, &bytes)?;
        Ok(bytes.len())
    }
}

/// Re-writes a weight file as the f16 web weight file (verifying it on the way in; a trained
/// part is composed with the pretrained autoencoder), or with `trained_part` only that part
/// of it (what the project commits of a model built on third-party weights).
pub struct ExportWeb<'a> {
    pub weights: &'a Path,
    pub out: &'a Path,
    pub trained_part: Option<&'a str>,
}

impl BackendTask for ExportWeb<'_> {
    type Output = usize;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<usize> {
        let model = read_weights::<B>(self.weights, &device)?;
        let out = match self.trained_part {
            Some(part) => save_trained_part(&model, StoredPrecision::F16, part)?,
            None => save_weights(&model, StoredPrecision::F16)?,
        };
        write_atomically(self.out, &out)?;
        Ok(out.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("gdpo-export-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second version").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second version");
        assert!(!dir.join("w.safetensors.partial").exists());
        // A directory that does not exist: an error, nothing written.
        assert!(write_atomically(&dir.join("missing/w.safetensors"), b"x").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
