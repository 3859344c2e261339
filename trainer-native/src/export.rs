//! Writing weight files: atomically (write, fsync, rename), so an interrupted export never
//! leaves a partial file where a reader expects a complete one.

use std::{fs, io::Write, path::Path};

use anyhow::Context;
use burn::tensor::backend::Backend;
use model::{
    DetailRange, ModelConfig, Naosd, StoredPrecision, save_detail_range, save_trained_part,
    save_weights,
};

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
/// the pretrained TAEF2 autoencoder from [`pretrained::taef2_dir`]; a file with a detail
/// range is loaded at its default point ([`read_weights_at`] picks another).
///
/// # Errors
/// IO errors, every [`model::ModelError`] of the loader, missing or altered TAEF2 files.
pub fn read_weights<B: Backend>(path: &Path, device: &B::Device) -> anyhow::Result<Naosd<B>> {
    Ok(read_model(path, device)?.model)
}

/// As [`read_weights`], at the point `detail` (0 = fidelity end, 1 = detail end) of the
/// file's detail range when given.
///
/// # Errors
/// As [`read_weights`]; a `detail` for a file without a range, or outside 0..=1.
pub fn read_weights_at<B: Backend>(
    path: &Path,
    detail: Option<f32>,
    device: &B::Device,
) -> anyhow::Result<Naosd<B>> {
    read_model(path, device)?.at(detail, path)
}

/// A weight file as read: the model (at the range's default), the file's header, its range.
struct ReadModel<B: Backend> {
    model: Naosd<B>,
    info: model::WeightInfo,
    range: Option<DetailRange>,
}

impl<B: Backend> ReadModel<B> {
    /// The model at `detail` of the range (`None`: the default, as read).
    fn at(self, detail: Option<f32>, path: &Path) -> anyhow::Result<Naosd<B>> {
        let Some(detail) = detail else {
            return Ok(self.model);
        };
        let range = self.range.with_context(|| {
            format!(
                "{} holds one model, not a detail range: --detail needs a file made by \
                 `trainer-native range` (the shipped weights/taef2-unet.safetensors is one)",
                path.display()
            )
        })?;
        range
            .apply(self.model, detail)
            .with_context(|| path.display().to_string())
    }
}

fn read_model<B: Backend>(path: &Path, device: &B::Device) -> anyhow::Result<ReadModel<B>> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let context = || path.display().to_string();
    let info = model::read_weight_info(&bytes).with_context(context)?;
    let (model, range) = match &info.trained_part {
        None => model::load_weights_with_range::<B>(&bytes, device).with_context(context)?,
        Some(_) => {
            let base =
                pretrained::load_taef2(info.config.init::<B>(device)?, &pretrained::taef2_dir())
                    .with_context(|| format!("composing {}", path.display()))?;
            model::load_trained_part_with_range(&bytes, base).with_context(context)?
        }
    };
    Ok(ReadModel { model, info, range })
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
/// part is composed with the pretrained autoencoder; a detail range stays a range unless
/// `detail` fixes a point of it), or with `trained_part` only that part of it (what the
/// project commits of a model built on third-party weights).
pub struct ExportWeb<'a> {
    pub weights: &'a Path,
    pub out: &'a Path,
    pub trained_part: Option<&'a str>,
    pub detail: Option<f32>,
}

impl BackendTask for ExportWeb<'_> {
    type Output = usize;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<usize> {
        let read = read_model::<B>(self.weights, &device)?;
        let out = match (self.detail, &read.range) {
            // A range stays a range: both ends, the same default.
            (None, Some(range)) => save_detail_range(
                &range.apply(read.model.clone(), 0.0)?,
                &range.apply(read.model.clone(), 1.0)?,
                range.default_detail(),
                range.part(),
                self.trained_part,
                StoredPrecision::F16,
            )?,
            (detail, _) => {
                let model = read.at(detail, self.weights)?;
                match self.trained_part {
                    Some(part) => save_trained_part(&model, StoredPrecision::F16, part)?,
                    None => save_weights(&model, StoredPrecision::F16)?,
                }
            }
        };
        write_atomically(self.out, &out)?;
        Ok(out.len())
    }
}

/// Network interpolation (ESRGAN, Wang et al. 2018) as a knob: two fine-tunings of one start
/// (a fidelity and a perceptual piece) written as one file with a detail range
/// ([`model::DetailRange`]): the model is used anywhere between them, `default` unless the
/// user picks a point, without training. Written in the inputs' form (a trained part stays a
/// trained part); the pretrained autoencoder, shared by both, is stored once.
pub struct DetailRangeWeights<'a> {
    pub low: &'a Path,
    pub high: &'a Path,
    pub default: f32,
    pub out: &'a Path,
}

impl BackendTask for DetailRangeWeights<'_> {
    type Output = usize;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<usize> {
        let low = read_model::<B>(self.low, &device)?;
        let high = read_model::<B>(self.high, &device)?;
        for (path, read) in [(self.low, &low), (self.high, &high)] {
            anyhow::ensure!(
                read.range.is_none(),
                "{} already holds a detail range; each end must be one model",
                path.display()
            );
        }
        anyhow::ensure!(
            low.info.config == high.info.config && low.info.trained_part == high.info.trained_part,
            "{} and {} are not the same architecture (config `{}` vs `{}`, trained part {:?} vs \
             {:?}): only two trainings of one model make a detail range",
            self.low.display(),
            self.high.display(),
            low.info.config.name,
            high.info.config.name,
            low.info.trained_part,
            high.info.trained_part
        );
        let part = low.info.trained_part.as_deref();
        let out = save_detail_range(
            &low.model,
            &high.model,
            self.default,
            part.unwrap_or("unet"),
            part,
            StoredPrecision::F16,
        )?;
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
