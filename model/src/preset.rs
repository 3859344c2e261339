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

/// Encoder E / decoder D. The downsampling factor is `f = pixel_unshuffle * 2^(levels - 1)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Space-to-depth factor applied to the image before the first convolution (and
    /// depth-to-space after the last), so no convolution runs at full output resolution.
    pub pixel_unshuffle: usize,
    /// Encoder channels per level, highest resolution first.
    pub encoder_channels: Vec<usize>,
    /// Decoder channels per level, highest resolution first (same number of levels).
    pub decoder_channels: Vec<usize>,
    /// Residual blocks per encoder level.
    pub encoder_blocks: usize,
    /// Residual blocks per decoder level.
    pub decoder_blocks: usize,
    /// GroupNorm groups (must divide every channel count).
    pub norm_groups: usize,
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
                pixel_unshuffle: 2,
                encoder_channels: vec![8, 16],
                decoder_channels: vec![8, 16],
                encoder_blocks: 1,
                decoder_blocks: 1,
                norm_groups: 4,
            },
            unet: UNetConfig {
                channels: vec![16, 32],
                blocks_per_level: 1,
                attention_heads: 2,
                norm_groups: 4,
            },
        }
    }

    /// The shipped model, sized for the browser: f = 8 with 16 latent channels (the
    /// compression of SD3/FLUX-style autoencoders, 12 values per latent element instead of
    /// SD's 48), encoder and decoder at 1/4 resolution or lower via pixel (un)shuffle, a
    /// three-level UNet at 1/8, 1/16, 1/32. Its cost is in `docs/architecture.md`.
    pub fn base() -> Self {
        Self {
            name: "base".into(),
            image_channels: 3,
            latent_channels: 16,
            latent_scale: 1.0,
            autoencoder: AutoencoderConfig {
                pixel_unshuffle: 4,
                encoder_channels: vec![64, 128],
                decoder_channels: vec![64, 128],
                encoder_blocks: 1,
                decoder_blocks: 2,
                norm_groups: 16,
            },
            unet: UNetConfig {
                channels: vec![128, 192, 256],
                blocks_per_level: 1,
                attention_heads: 4,
                norm_groups: 16,
            },
        }
    }

    /// A preset by name (`tiny`, `base`).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] for an unknown name.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "base" => Ok(Self::base()),
            other => Err(ModelError::InvalidConfig(format!(
                "unknown preset `{other}` (known: tiny, base)"
            ))),
        }
    }

    /// Downsampling factor f of the autoencoder.
    pub fn downsample_factor(&self) -> usize {
        self.autoencoder.pixel_unshuffle << (self.autoencoder.encoder_channels.len() - 1)
    }

    /// Image sides given to the autoencoder must be multiples of this (the UNet halves the
    /// latent `levels - 1` times on top of f).
    pub fn size_multiple(&self) -> usize {
        self.downsample_factor() << (self.unet.channels.len() - 1)
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
        if ae.pixel_unshuffle == 0
            || ae.encoder_channels.is_empty()
            || self.unet.channels.is_empty()
        {
            return bad("pixel_unshuffle and the channel lists must be non-empty/positive".into());
        }
        if ae.encoder_channels.len() != ae.decoder_channels.len() {
            return bad(
                "encoder_channels and decoder_channels need the same number of levels".into(),
            );
        }
        if ae.encoder_blocks == 0 || ae.decoder_blocks == 0 || self.unet.blocks_per_level == 0 {
            return bad("every level needs at least one residual block".into());
        }
        if ae.encoder_channels.len() + self.unet.channels.len() > 12 {
            return bad("too many levels".into());
        }
        for (what, groups, channels) in [
            (
                "autoencoder",
                ae.norm_groups,
                ae.encoder_channels.iter().chain(&ae.decoder_channels),
            ),
            (
                "unet",
                self.unet.norm_groups,
                self.unet.channels.iter().chain(&[]),
            ),
        ] {
            for &c in channels {
                if groups == 0 || c == 0 || c % groups != 0 {
                    return bad(format!(
                        "{what}: {c} channels cannot be split into {groups} norm groups"
                    ));
                }
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
        for name in ["tiny", "base"] {
            let c = ModelConfig::preset(name).unwrap();
            c.validate().unwrap();
            assert_eq!(c.name, name);
        }
        assert_eq!(ModelConfig::base().downsample_factor(), 8);
        assert_eq!(ModelConfig::base().size_multiple(), 32);
        assert_eq!(ModelConfig::tiny().downsample_factor(), 4);
        assert!(ModelConfig::preset("huge").is_err());
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let mut c = ModelConfig::tiny();
        c.unet.norm_groups = 5;
        assert!(
            matches!(c.validate(), Err(ModelError::InvalidConfig(m)) if m.contains("norm groups"))
        );
        let mut c = ModelConfig::tiny();
        c.autoencoder.decoder_channels.pop();
        assert!(c.validate().is_err());
        let mut c = ModelConfig::tiny();
        c.latent_scale = f64::NAN;
        assert!(c.validate().is_err());
    }

    #[test]
    fn config_round_trips_and_rejects_typos() {
        let c = ModelConfig::base();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), c);
        let typo = json.replace("latent_scale", "latent_scael");
        assert!(serde_json::from_str::<ModelConfig>(&typo).is_err());
    }
}
