//! The pretrained TAEF2 autoencoder (madebyollin/taesd at 5cccb12, MIT): FLUX.2's 32-channel
//! latent space at 1/8 of the image side, the frozen E and D of the shipped model.
//!
//! The files are third-party data: they are read from `../shared/weights/taef2/` (or a
//! directory given on the command line), checked against the SHA-256 below, and never copied
//! into the project. The project commits only what it trains (the UNet); [`compose`] builds
//! the whole model from both at build time (`trainer-native compose`, called by
//! `scripts/build-web.sh` and `scripts/test.sh`).
//!
//! The PyTorch zip archives (`torch.save` of an `nn.Sequential` state dict, f16) are read
//! with burn's own PyTorch reader (`burn-store`); [`taef2_key`] maps this crate's module paths
//! to the archives' Sequential indices.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use burn::{
    module::Module,
    tensor::{TensorData, backend::Backend},
};
use burn_store::{TensorSnapshot, pytorch::PytorchReader};
use model::{ModelConfig, Naosd};

use crate::third_party::ThirdPartyFile;

/// Where the project looks for the files, relative to the repository root.
pub const DEFAULT_DIR: &str = "../shared/weights/taef2";

/// The environment variable that overrides [`DEFAULT_DIR`].
pub const DIR_VARIABLE: &str = "GDPO_SR_TAEF2_DIR";

/// The TAEF2 directory: `$GDPO_SR_TAEF2_DIR`, else [`DEFAULT_DIR`] (relative to the working
/// directory, the repository root for every documented command).
pub fn taef2_dir() -> PathBuf {
    std::env::var_os(DIR_VARIABLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

const TAEF2_ORIGIN: &str = "madebyollin/taesd, MIT; set GDPO_SR_TAEF2_DIR to its folder; \
     see README.md, \"Pretrained weights\"";

pub const TAEF2_ENCODER: ThirdPartyFile = ThirdPartyFile {
    name: "taef2_encoder.pth",
    sha256: "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
    what: "the pretrained TAEF2 encoder",
    described_in: TAEF2_ORIGIN,
};
pub const TAEF2_DECODER: ThirdPartyFile = ThirdPartyFile {
    name: "taef2_decoder.pth",
    sha256: "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
    what: "the pretrained TAEF2 decoder",
    described_in: TAEF2_ORIGIN,
};

/// The path of `file` in `dir`, after checking that it exists and has the expected hash
/// (burn's PyTorch reader opens archives by path).
///
/// # Errors
/// As [`ThirdPartyFile::read`].
pub fn verified_path(dir: &Path, file: &ThirdPartyFile) -> anyhow::Result<PathBuf> {
    file.read(dir)?;
    Ok(file.path(dir))
}

/// The archive key of a TAEF2 parameter, from its path inside the encoder or decoder
/// (`stages.1.blocks.2.conv_3.weight` -> `9.conv.4.weight`). The Sequential layouts:
/// encoder `conv, Block, 3 x [stride-2 conv, 3 Blocks], conv` (indices 0..=14), decoder
/// `clamp, conv, ReLU, 3 midblocks, 3 x [upsample, conv, Blocks (3, 3, 1)], conv` (1..=19).
pub fn taef2_key(part: Part, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('.').collect();
    let leaf = |i: usize| -> Option<String> {
        match parts.get(i..)? {
            ["weight"] => Some("weight".into()),
            ["bias"] => Some("bias".into()),
            _ => None,
        }
    };
    // Inside a block: conv_1..3 -> conv.0/2/4, global.expand/norm/project -> pool.0/1/3.
    let block = |index: usize, rest: &[&str]| -> Option<String> {
        let inner = match rest {
            ["conv_1", p] => format!("conv.0.{p}"),
            ["conv_2", p] => format!("conv.2.{p}"),
            ["conv_3", p] => format!("conv.4.{p}"),
            ["global", "expand", "weight"] => "pool.0.weight".into(),
            ["global", "norm", "gamma"] => "pool.1.weight".into(),
            ["global", "norm", "beta"] => "pool.1.bias".into(),
            ["global", "project", "weight"] => "pool.3.weight".into(),
            _ => return None,
        };
        Some(format!("{index}.{inner}"))
    };
    let index = |s: &str| s.parse::<usize>().ok();
    match (part, parts.as_slice()) {
        (Part::Encoder, ["conv_in", ..]) => Some(format!("0.{}", leaf(1)?)),
        (Part::Encoder, ["block_in", rest @ ..]) => block(1, rest),
        (Part::Encoder, ["stages", s, "downsample", "weight"]) => {
            Some(format!("{}.weight", 2 + 4 * index(s)?))
        }
        (Part::Encoder, ["stages", s, "blocks", b, rest @ ..]) => {
            block(3 + 4 * index(s)? + index(b)?, rest)
        }
        (Part::Encoder, ["conv_out", ..]) => Some(format!("14.{}", leaf(1)?)),
        (Part::Decoder, ["conv_in", ..]) => Some(format!("1.{}", leaf(1)?)),
        (Part::Decoder, ["mid_blocks", b, rest @ ..]) => block(3 + index(b)?, rest),
        (Part::Decoder, ["stages", s, "conv", "weight"]) => {
            Some(format!("{}.weight", 7 + 5 * index(s)?))
        }
        (Part::Decoder, ["stages", s, "blocks", b, rest @ ..]) => {
            block(8 + 5 * index(s)? + index(b)?, rest)
        }
        (Part::Decoder, ["conv_out", ..]) => Some(format!("19.{}", leaf(1)?)),
        _ => None,
    }
}

/// Which half of the autoencoder a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Encoder,
    Decoder,
}

/// Fills a module's float parameters from an archive's tensors by [`taef2_key`].
/// A TAEF2 tensor for the model parameter at `path`, checked against the shape it needs.
fn archive_values(
    tensors: &HashMap<String, TensorSnapshot>,
    part: Part,
    path: &str,
    shape: &[usize],
) -> anyhow::Result<TensorData> {
    let key = taef2_key(part, path)
        .with_context(|| format!("no TAEF2 tensor corresponds to `{path}`"))?;
    let snapshot = tensors
        .get(&key)
        .with_context(|| format!("the TAEF2 file has no tensor `{key}` (for `{path}`)"))?;
    let data = snapshot
        .to_data()
        .map_err(|e| anyhow::anyhow!("cannot read TAEF2 tensor `{key}`: {e:?}"))?;
    if data.shape.as_slice() != shape {
        bail!(
            "TAEF2 tensor `{key}` has shape {:?}, `{path}` needs {shape:?}",
            data.shape
        );
    }
    Ok(data.convert::<f32>())
}

fn fill<B: Backend, M: Module<B>>(module: M, part: Part, archive: &Path) -> anyhow::Result<M> {
    let reader = PytorchReader::new(archive)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e:?}", archive.display()))?;
    let tensors = reader.into_tensors();
    let (module, used) = model::replace_parameters(module, |path, shape| {
        archive_values(&tensors, part, path, shape).map(Some)
    })
    .with_context(|| format!("loading {}", archive.display()))?;
    if used != tensors.len() {
        bail!(
            "{} holds {} tensors, the model used {used}: not the TAEF2 layout",
            archive.display(),
            tensors.len(),
        );
    }
    Ok(module)
}

/// Checks that a config has TAEF2's fixed sizes.
///
/// # Errors
/// Naming the first size that differs.
pub fn check_taef2_config(config: &ModelConfig) -> anyhow::Result<()> {
    let want = ModelConfig::taef2();
    let (got, want) = (
        (
            config.image_channels,
            config.latent_channels,
            &config.autoencoder,
        ),
        (want.image_channels, want.latent_channels, &want.autoencoder),
    );
    if got != want {
        bail!("the model's autoencoder sizes {got:?} are not TAEF2's {want:?} (preset `taef2`)");
    }
    Ok(())
}

/// Replaces the model's encoder and decoder by the pretrained TAEF2 from `dir`.
///
/// # Errors
/// Missing or altered files (naming the path and the hash), a config without TAEF2's sizes.
pub fn load_taef2<B: Backend>(mut model: Naosd<B>, dir: &Path) -> anyhow::Result<Naosd<B>> {
    check_taef2_config(model.config())?;
    let encoder = verified_path(dir, &TAEF2_ENCODER)?;
    let decoder = verified_path(dir, &TAEF2_DECODER)?;
    model.autoencoder.encoder = fill(model.autoencoder.encoder, Part::Encoder, &encoder)?;
    model.autoencoder.decoder = fill(model.autoencoder.decoder, Part::Decoder, &decoder)?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_sequential_layout() {
        let cases = [
            (Part::Encoder, "conv_in.weight", "0.weight"),
            (Part::Encoder, "block_in.conv_2.bias", "1.conv.2.bias"),
            (Part::Encoder, "stages.0.downsample.weight", "2.weight"),
            (
                Part::Encoder,
                "stages.1.blocks.2.conv_3.weight",
                "9.conv.4.weight",
            ),
            (Part::Encoder, "stages.2.downsample.weight", "10.weight"),
            (
                Part::Encoder,
                "stages.2.blocks.0.global.norm.gamma",
                "11.pool.1.weight",
            ),
            (Part::Encoder, "conv_out.bias", "14.bias"),
            (Part::Decoder, "conv_in.weight", "1.weight"),
            (
                Part::Decoder,
                "mid_blocks.2.global.project.weight",
                "5.pool.3.weight",
            ),
            (Part::Decoder, "stages.0.conv.weight", "7.weight"),
            (
                Part::Decoder,
                "stages.1.blocks.2.conv_1.weight",
                "15.conv.0.weight",
            ),
            (
                Part::Decoder,
                "stages.2.blocks.0.conv_1.bias",
                "18.conv.0.bias",
            ),
            (Part::Decoder, "conv_out.weight", "19.weight"),
        ];
        for (part, path, key) in cases {
            assert_eq!(taef2_key(part, path).as_deref(), Some(key), "{path}");
        }
        assert_eq!(taef2_key(Part::Decoder, "block_in.conv_1.weight"), None);
    }

    #[test]
    fn a_missing_directory_names_the_path_and_the_hash() {
        let err = verified_path(Path::new("/nonexistent/taef2"), &TAEF2_ENCODER)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/taef2/taef2_encoder.pth"),
            "{err}"
        );
        assert!(err.contains(TAEF2_ENCODER.sha256), "{err}");
    }
}
