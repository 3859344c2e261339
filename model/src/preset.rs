//! Model configuration and the named presets (data, not code paths).
//!
//! Every size of the network comes from a [`ModelConfig`]; the weight file embeds the config
//! it was written with, so a loader always rebuilds the architecture the tensors belong to.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The full architecture of the one-step SR model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Preset name, for logs and the web page.
    pub name: String,
    /// Colour channels of images (3: RGB).
    pub image_channels: usize,
    /// Latent channels C.
    pub latent_channels: usize,
    /// Latent scale k: `z = k * E(x)` has roughly unit variance (estimated in stage 1).
    pub latent_scale: f64,
    pub autoencoder: AutoencoderConfig,
    pub unet: UNetConfig,
}

/// Encoder E / decoder D: the TAESD family ([`crate::autoencoder`]); the downsampling factor
/// is always 8. The shipped model uses the pretrained TAEF2 (64 channels, 32 latent channels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Channels of every convolution inside E and D.
    pub channels: usize,
    /// GroupNorm groups of the midblocks' global branch (over `4 * channels`).
    pub global_groups: usize,
}

/// The timestep-conditioned eps-UNet on latents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels per level, highest resolution first; each further level halves the resolution.
    pub channels: Vec<usize>,
    /// Residual blocks per level on the way down (one more on the way up).
    pub blocks_per_level: usize,
    /// Heads of the self-attention in the middle block (lowest resolution).
    pub attention_heads: usize,
    /// GroupNorm groups (must divide every channel count).
    pub norm_groups: usize,
}

impl ModelConfig {
    /// For tests: small enough to run in a headless software browser in seconds.
    pub fn tiny() -> Self {
        Self {
            name: "tiny".into(),
            image_channels: 3,
            latent_channels: 4,
            latent_scale: 1.0,
            autoencoder: AutoencoderConfig {
                channels: 8,
                global_groups: 4,
            },
            unet: UNetConfig {
                channels: vec![16, 32],
                blocks_per_level: 1,
                attention_heads: 2,
                norm_groups: 4,
            },
        }
    }

    /// The shipped model: the pretrained TAEF2 autoencoder (FLUX.2's 32-channel latent at
    /// 1/8 of the image side; its sizes are fixed by the pretrained file) and a three-level
    /// UNet at 1/8, 1/16, 1/32 that reads the noisy and the clean LR latent. Its cost is in
    /// `docs/architecture.md`.
    pub fn taef2() -> Self {
        Self {
            name: "taef2".into(),
            image_channels: 3,
            latent_channels: 32,
            // 1 / the std of TAEF2 latents of photographs (0.80..0.87 on Set5, mean 0.84:
            // tests/pytorch/taef2_ref.py), so that the noise at t_add has its intended strength.
            latent_scale: 1.19,
            autoencoder: AutoencoderConfig {
                channels: 64,
                global_groups: 4,
            },
            unet: UNetConfig {
                channels: vec![64, 128, 128],
                blocks_per_level: 1,
                attention_heads: 4,
                norm_groups: 16,
            },
        }
    }

    /// A preset by name (`tiny`, `taef2`).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for an unknown name.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "taef2" => Ok(Self::taef2()),
            other => Err(ModelError::InvalidConfig(format!(
                "unknown preset `{other}` (known: tiny, taef2)"
            ))),
        }
    }

    /// Downsampling factor f of the autoencoder.
    pub fn downsample_factor(&self) -> usize {
        crate::autoencoder::DOWNSAMPLE
    }

    /// Image sides given to the autoencoder must be multiples of this (the UNet halves the
    /// latent `levels - 1` times on top of f).
    pub fn size_multiple(&self) -> usize {
        self.downsample_factor() << (self.unet.channels.len() - 1)
    }

    /// The LR side, edge-padded, that a side of `len` LR pixels becomes so that its `scale`x
    /// upscale is a multiple of [`Self::size_multiple`] (the untiled pipeline and the tiler pad
    /// alike, which keeps their outputs equal).
    pub fn padded_lr_side(&self, len: usize, scale: usize) -> usize {
        let m = self.size_multiple();
        (len..)
            .find(|&l| (l * scale).is_multiple_of(m))
            .expect("m is a multiple of itself, reached at the latest by len rounded up to m")
    }

    /// Checks that the sizes form a network.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] naming the first problem found.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(ModelError::InvalidConfig(msg));
        let ae = &self.autoencoder;
        if self.image_channels == 0 || self.latent_channels == 0 {
            return bad("image_channels and latent_channels must be positive".into());
        }
        if !(self.latent_scale.is_finite() && self.latent_scale > 0.0) {
            return bad(format!(
                "latent_scale must be finite and positive, got {}",
                self.latent_scale
            ));
        }
        if ae.channels == 0 || self.unet.channels.is_empty() {
            return bad("autoencoder channels and the UNet channel list must be non-empty".into());
        }
        if self.unet.blocks_per_level == 0 {
            return bad("every UNet level needs at least one residual block".into());
        }
        if self.unet.channels.len() > 8 {
            return bad("too many levels".into());
        }
        if ae.global_groups == 0 || !(4 * ae.channels).is_multiple_of(ae.global_groups) {
            return bad(format!(
                "autoencoder: {} channels cannot be split into {} norm groups",
                4 * ae.channels,
                ae.global_groups
            ));
        }
        for &c in &self.unet.channels {
            let groups = self.unet.norm_groups;
            if groups == 0 || c == 0 || c % groups != 0 {
                return bad(format!(
                    "unet: {c} channels cannot be split into {groups} norm groups"
                ));
            }
        }
        let heads = self.unet.attention_heads;
        let deepest = *self.unet.channels.last().expect("checked non-empty");
        if heads == 0 || !deepest.is_multiple_of(heads) {
            return bad(format!(
                "unet: {deepest} channels cannot be split into {heads} attention heads"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for name in ["tiny", "taef2"] {
            let c = ModelConfig::preset(name).unwrap();
            c.validate().unwrap();
            assert_eq!(c.name, name);
        }
        assert_eq!(ModelConfig::taef2().downsample_factor(), 8);
        assert_eq!(ModelConfig::taef2().size_multiple(), 32);
        assert_eq!(ModelConfig::tiny().size_multiple(), 16);
        assert!(ModelConfig::preset("huge").is_err());
    }

    #[test]
    fn padded_lr_side_is_the_least_side_whose_upscale_fits() {
        for config in [ModelConfig::tiny(), ModelConfig::taef2()] {
            let m = config.size_multiple();
            for scale in 1..=4 {
                for len in 1..=70 {
                    let padded = config.padded_lr_side(len, scale);
                    assert!(padded >= len && (padded * scale) % m == 0, "{len} x{scale}");
                    assert!(
                        (len..padded).all(|l| (l * scale) % m != 0),
                        "{len} x{scale}"
                    );
                }
            }
        }
        assert_eq!(ModelConfig::taef2().padded_lr_side(33, 4), 40);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let mut c = ModelConfig::tiny();
        c.unet.norm_groups = 5;
        assert!(
            matches!(c.validate(), Err(ModelError::InvalidConfig(m)) if m.contains("norm groups"))
        );
        let mut c = ModelConfig::tiny();
        c.autoencoder.global_groups = 3;
        assert!(c.validate().is_err());
        let mut c = ModelConfig::tiny();
        c.latent_scale = f64::NAN;
        assert!(c.validate().is_err());
    }

    #[test]
    fn config_round_trips_and_rejects_typos() {
        let c = ModelConfig::taef2();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), c);
        let typo = json.replace("latent_scale", "latent_scael");
        assert!(serde_json::from_str::<ModelConfig>(&typo).is_err());
    }
}
