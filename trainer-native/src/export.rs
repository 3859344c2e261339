//! Writing weight files: atomically (write, fsync, rename), so an interrupted export never
//! leaves a partial file where a reader expects a complete one.

use std::{collections::BTreeMap, fs, io::Write, path::Path};

use anyhow::Context;
use burn::{
    module::{Module, ModuleMapper, Param},
    tensor::{Tensor, TensorData, backend::Backend},
};
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

/// Network interpolation (ESRGAN, Wang et al. 2018): every parameter of `a` moved the fraction
/// `alpha` of the way to the same parameter of `b`, written in `a`'s form (a trained part stays
/// a trained part). Two fine-tunings of one start (a fidelity and a perceptual piece) blend into
/// a model between them without training; the pretrained autoencoder, shared by both, is
/// left as it is.
pub struct BlendWeights<'a> {
    pub a: &'a Path,
    pub b: &'a Path,
    pub alpha: f32,
    pub out: &'a Path,
}

impl BackendTask for BlendWeights<'_> {
    type Output = usize;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<usize> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.alpha),
            "--alpha must be within 0..=1 (0 = the first file, 1 = the second), got {}",
            self.alpha
        );
        let info = |path: &Path| -> anyhow::Result<model::WeightInfo> {
            let bytes =
                fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            model::read_weight_info(&bytes).with_context(|| path.display().to_string())
        };
        let (info_a, info_b) = (info(self.a)?, info(self.b)?);
        anyhow::ensure!(
            info_a.config == info_b.config && info_a.trained_part == info_b.trained_part,
            "{} and {} are not the same architecture (config `{}` vs `{}`, trained part {:?} vs \
             {:?}): only two trainings of one model can be blended",
            self.a.display(),
            self.b.display(),
            info_a.config.name,
            info_b.config.name,
            info_a.trained_part,
            info_b.trained_part
        );
        let a = read_weights::<B>(self.a, &device)?;
        let b = read_weights::<B>(self.b, &device)?;
        let mut blend = Blend {
            path: Vec::new(),
            targets: model::named_parameters(&b),
            alpha: self.alpha,
        };
        let blended = a.map(&mut blend);
        let out = match &info_a.trained_part {
            Some(part) => save_trained_part(&blended, StoredPrecision::F16, part)?,
            None => save_weights(&blended, StoredPrecision::F16)?,
        };
        write_atomically(self.out, &out)?;
        Ok(out.len())
    }
}

struct Blend {
    path: Vec<String>,
    targets: BTreeMap<String, TensorData>,
    alpha: f32,
}

impl<B: Backend> ModuleMapper<B> for Blend {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        // Same config, so the same paths and shapes (checked above).
        let target = self.path.join(".");
        let target = self.targets.remove(&target).expect("same architecture");
        let target = Tensor::<B, D>::from_data(target, &tensor.device());
        // `a + alpha (b - a)`: a parameter both files share comes out bit-identical.
        let blended = tensor.clone() + (target - tensor).mul_scalar(self.alpha);
        Param::from_mapped_value(id, blended, mapper)
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
