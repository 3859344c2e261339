//! `DegradationConfig`: every constant of the Real-ESRGAN second-order degradation
//! (method.md section 3), as plain data that loads from TOML.
//!
//! Field names follow BasicSR's `realesrgan_dataset.py` / `realesrgan_model.py` options
//! (`blur_sigma`, `betag_range`, `resize_prob2`, ...), with a `2` suffix for the second
//! order. The struct is flat rather than nested per stage so that `#[serde(default)]`
//! fills each missing key with its own stage's default (a nested `[second]` table would
//! fall back to the first stage's defaults).

use std::f32::consts::PI;

use serde::{Deserialize, Serialize};

use super::ops::Interp;

/// Relative weights of the six Gaussian-like kernel families (the non-sinc kernels).
///
/// Used like BasicSR's `kernel_prob`: weights, normalised by their sum when sampling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelProbs {
    pub iso: f32,
    pub aniso: f32,
    pub generalized_iso: f32,
    pub generalized_aniso: f32,
    pub plateau_iso: f32,
    pub plateau_aniso: f32,
}

impl Default for KernelProbs {
    fn default() -> Self {
        Self {
            iso: 0.45,
            aniso: 0.25,
            generalized_iso: 0.12,
            generalized_aniso: 0.03,
            plateau_iso: 0.12,
            plateau_aniso: 0.03,
        }
    }
}

impl KernelProbs {
    /// The weights in `KernelFamily` order (iso, aniso, generalized iso/aniso, plateau iso/aniso).
    pub fn as_array(&self) -> [f32; 6] {
        [
            self.iso,
            self.aniso,
            self.generalized_iso,
            self.generalized_aniso,
            self.plateau_iso,
            self.plateau_aniso,
        ]
    }
}

/// Relative weights of scaling up, down, or keeping the size (BasicSR's `resize_prob`).
///
/// A `[resize_prob]` table must give all three keys: the two orders have different
/// defaults, so a partial table has no sensible fallback.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeProbs {
    pub up: f32,
    pub down: f32,
    pub keep: f32,
}

impl ResizeProbs {
    /// The weights in (up, down, keep) order.
    pub fn as_array(&self) -> [f32; 3] {
        [self.up, self.down, self.keep]
    }
}

/// Every parameter of the x4 second-order degradation; `Default` is method.md section 3.
///
/// Ranges are `[min, max]`, sampled uniformly. Noise sigmas are in 8-bit units (divided
/// by 255 when applied), as in BasicSR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DegradationConfig {
    /// The super-resolution factor: the LQ image is exactly `HR / scale` on each side.
    pub scale: usize,
    /// Odd blur kernel sizes, `[min, max]`, shared by both orders and the final sinc.
    pub kernel_size: [usize; 2],
    /// Rotation range of the anisotropic kernels, radians (both orders).
    pub rotation_range: [f32; 2],
    /// A sinc kernel's cutoff when the kernel is smaller than `sinc_large_kernel`.
    pub sinc_cutoff_small: [f32; 2],
    /// A sinc kernel's cutoff when the kernel is at least `sinc_large_kernel` wide:
    /// larger kernels can hold the wider ringing of lower cutoffs.
    pub sinc_cutoff_large: [f32; 2],
    /// The kernel size from which `sinc_cutoff_large` applies.
    pub sinc_large_kernel: usize,
    /// Interpolation modes, chosen uniformly for every resize.
    pub resize_modes: Vec<Interp>,

    // First order.
    /// Probability that the first blur is a sinc kernel instead of a Gaussian-like one.
    pub sinc_prob: f32,
    /// Weights of the Gaussian-like families for the first blur.
    pub kernel_probs: KernelProbs,
    /// Sigma range of the first blur (pixels).
    pub blur_sigma: [f32; 2],
    /// Shape exponent range of the generalized Gaussians, first order.
    pub betag_range: [f32; 2],
    /// Shape exponent range of the plateau kernels, first order.
    pub betap_range: [f32; 2],
    /// Weights of scaling up / down / keeping, first order.
    pub resize_prob: ResizeProbs,
    /// Scale factor range when scaling up, first order.
    pub resize_up: [f32; 2],
    /// Scale factor range when scaling down, first order.
    pub resize_down: [f32; 2],
    /// Probability of Gaussian noise (else Poisson), first order.
    pub gaussian_noise_prob: f32,
    /// Gaussian noise sigma range in 8-bit units, first order.
    pub noise_range: [f32; 2],
    /// Poisson noise scale range, first order.
    pub poisson_scale_range: [f32; 2],
    /// Probability that the noise is the same in all channels, first order.
    pub gray_noise_prob: f32,
    /// JPEG quality range, first order.
    pub jpeg_range: [u8; 2],

    // Second order.
    /// Probability of applying the second blur at all.
    pub second_blur_prob: f32,
    /// Probability that the second blur is a sinc kernel.
    pub sinc_prob2: f32,
    /// Weights of the Gaussian-like families for the second blur.
    pub kernel_probs2: KernelProbs,
    /// Sigma range of the second blur (pixels).
    pub blur_sigma2: [f32; 2],
    /// Shape exponent range of the generalized Gaussians, second order.
    pub betag_range2: [f32; 2],
    /// Shape exponent range of the plateau kernels, second order.
    pub betap_range2: [f32; 2],
    /// Weights of scaling up / down / keeping, second order.
    pub resize_prob2: ResizeProbs,
    /// Scale factor range when scaling up, second order (relative to `HR / scale`).
    pub resize_up2: [f32; 2],
    /// Scale factor range when scaling down, second order (relative to `HR / scale`).
    pub resize_down2: [f32; 2],
    /// Probability of Gaussian noise (else Poisson), second order.
    pub gaussian_noise_prob2: f32,
    /// Gaussian noise sigma range in 8-bit units, second order.
    pub noise_range2: [f32; 2],
    /// Poisson noise scale range, second order.
    pub poisson_scale_range2: [f32; 2],
    /// Probability that the noise is the same in all channels, second order.
    pub gray_noise_prob2: f32,
    /// JPEG quality range, second order.
    pub jpeg_range2: [u8; 2],

    // Final step.
    /// Probability of ending with "resize to LQ + sinc, then JPEG" (else "JPEG, then resize + sinc").
    pub resize_then_jpeg_prob: f32,
    /// Probability of the final 2-D sinc filter.
    pub final_sinc_prob: f32,
    /// Cutoff range of the final sinc filter.
    pub final_sinc_cutoff: [f32; 2],
}

impl Default for DegradationConfig {
    fn default() -> Self {
        Self {
            scale: 4,
            kernel_size: [7, 21],
            rotation_range: [-PI, PI],
            sinc_cutoff_small: [PI / 3.0, PI],
            sinc_cutoff_large: [PI / 5.0, PI],
            sinc_large_kernel: 13,
            resize_modes: vec![Interp::Area, Interp::Bilinear, Interp::Bicubic],

            sinc_prob: 0.1,
            kernel_probs: KernelProbs::default(),
            blur_sigma: [0.2, 3.0],
            betag_range: [0.5, 4.0],
            betap_range: [1.0, 2.0],
            resize_prob: ResizeProbs {
                up: 0.2,
                down: 0.7,
                keep: 0.1,
            },
            resize_up: [1.0, 1.5],
            resize_down: [0.3, 1.0],
            gaussian_noise_prob: 0.5,
            noise_range: [1.0, 15.0],
            poisson_scale_range: [0.05, 2.0],
            gray_noise_prob: 0.4,
            jpeg_range: [60, 95],

            second_blur_prob: 0.5,
            sinc_prob2: 0.1,
            kernel_probs2: KernelProbs::default(),
            blur_sigma2: [0.2, 1.5],
            betag_range2: [0.5, 4.0],
            betap_range2: [1.0, 2.0],
            resize_prob2: ResizeProbs {
                up: 0.3,
                down: 0.4,
                keep: 0.3,
            },
            resize_up2: [1.0, 1.2],
            resize_down2: [0.6, 1.0],
            gaussian_noise_prob2: 0.5,
            noise_range2: [1.0, 12.0],
            poisson_scale_range2: [0.05, 1.0],
            gray_noise_prob2: 0.4,
            jpeg_range2: [60, 100],

            resize_then_jpeg_prob: 0.5,
            final_sinc_prob: 0.8,
            final_sinc_cutoff: [PI / 3.0, PI],
        }
    }
}

/// Why a `DegradationConfig` is rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid degradation config: `{field}`: {reason}")]
pub struct ConfigError {
    /// The offending key.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

fn check_prob(field: &'static str, p: f32) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(err(field, format!("probability {p} is outside [0, 1]")))
    }
}

fn check_weights(field: &'static str, w: &[f32]) -> Result<(), ConfigError> {
    for &p in w {
        check_prob(field, p)?;
    }
    if w.iter().sum::<f32>() > 0.0 {
        Ok(())
    } else {
        Err(err(field, "all weights are zero"))
    }
}

/// `min <= max`, both finite and `min >= lower` (or `> lower` when `strict`).
fn check_range(
    field: &'static str,
    [lo, hi]: [f32; 2],
    lower: f32,
    strict: bool,
) -> Result<(), ConfigError> {
    if !lo.is_finite() || !hi.is_finite() {
        return Err(err(field, format!("[{lo}, {hi}] is not finite")));
    }
    if lo > hi {
        return Err(err(field, format!("min {lo} > max {hi}")));
    }
    if lo < lower || (strict && lo == lower) {
        let rel = if strict { ">" } else { ">=" };
        return Err(err(field, format!("min {lo} must be {rel} {lower}")));
    }
    Ok(())
}

fn check_quality(field: &'static str, [lo, hi]: [u8; 2]) -> Result<(), ConfigError> {
    if lo == 0 || hi > 100 || lo > hi {
        return Err(err(
            field,
            format!("[{lo}, {hi}] is not an ordered range within [1, 100]"),
        ));
    }
    Ok(())
}

impl DegradationConfig {
    /// Rejects values the sampler cannot honour: probabilities outside [0, 1], inverted or
    /// non-finite ranges, even or zero kernel sizes, non-positive sigmas, cutoffs, shape
    /// exponents or scale factors, JPEG qualities outside [1, 100], no resize mode.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.scale == 0 {
            return Err(err("scale", "must be at least 1"));
        }
        let [kmin, kmax] = self.kernel_size;
        if kmin % 2 == 0 || kmax % 2 == 0 {
            return Err(err(
                "kernel_size",
                format!("[{kmin}, {kmax}]: sizes must be odd"),
            ));
        }
        if kmin > kmax {
            return Err(err("kernel_size", format!("min {kmin} > max {kmax}")));
        }
        check_range(
            "rotation_range",
            self.rotation_range,
            f32::NEG_INFINITY,
            false,
        )?;
        check_range("sinc_cutoff_small", self.sinc_cutoff_small, 0.0, true)?;
        check_range("sinc_cutoff_large", self.sinc_cutoff_large, 0.0, true)?;
        check_range("final_sinc_cutoff", self.final_sinc_cutoff, 0.0, true)?;
        if self.resize_modes.is_empty() {
            return Err(err("resize_modes", "needs at least one interpolation mode"));
        }

        check_prob("sinc_prob", self.sinc_prob)?;
        check_weights("kernel_probs", &self.kernel_probs.as_array())?;
        check_range("blur_sigma", self.blur_sigma, 0.0, true)?;
        check_range("betag_range", self.betag_range, 0.0, true)?;
        check_range("betap_range", self.betap_range, 0.0, true)?;
        check_weights("resize_prob", &self.resize_prob.as_array())?;
        check_range("resize_up", self.resize_up, 0.0, true)?;
        check_range("resize_down", self.resize_down, 0.0, true)?;
        check_prob("gaussian_noise_prob", self.gaussian_noise_prob)?;
        check_range("noise_range", self.noise_range, 0.0, false)?;
        check_range("poisson_scale_range", self.poisson_scale_range, 0.0, false)?;
        check_prob("gray_noise_prob", self.gray_noise_prob)?;
        check_quality("jpeg_range", self.jpeg_range)?;

        check_prob("second_blur_prob", self.second_blur_prob)?;
        check_prob("sinc_prob2", self.sinc_prob2)?;
        check_weights("kernel_probs2", &self.kernel_probs2.as_array())?;
        check_range("blur_sigma2", self.blur_sigma2, 0.0, true)?;
        check_range("betag_range2", self.betag_range2, 0.0, true)?;
        check_range("betap_range2", self.betap_range2, 0.0, true)?;
        check_weights("resize_prob2", &self.resize_prob2.as_array())?;
        check_range("resize_up2", self.resize_up2, 0.0, true)?;
        check_range("resize_down2", self.resize_down2, 0.0, true)?;
        check_prob("gaussian_noise_prob2", self.gaussian_noise_prob2)?;
        check_range("noise_range2", self.noise_range2, 0.0, false)?;
        check_range(
            "poisson_scale_range2",
            self.poisson_scale_range2,
            0.0,
            false,
        )?;
        check_prob("gray_noise_prob2", self.gray_noise_prob2)?;
        check_quality("jpeg_range2", self.jpeg_range2)?;

        check_prob("resize_then_jpeg_prob", self.resize_then_jpeg_prob)?;
        check_prob("final_sinc_prob", self.final_sinc_prob)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_validates() {
        DegradationConfig::default().validate().unwrap();
    }

    #[test]
    fn toml_round_trip() {
        let mut cfg = DegradationConfig {
            blur_sigma: [0.3, 2.5],
            resize_modes: vec![Interp::Bicubic],
            ..Default::default()
        };
        cfg.kernel_probs2.plateau_aniso = 0.5;
        let text = toml::to_string(&cfg).unwrap();
        let back: DegradationConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
        // An empty file is the default configuration.
        let empty: DegradationConfig = toml::from_str("").unwrap();
        assert_eq!(empty, DegradationConfig::default());
    }

    #[test]
    fn missing_keys_take_their_own_stage_default() {
        let cfg: DegradationConfig = toml::from_str("blur_sigma2 = [0.5, 1.0]\n").unwrap();
        assert_eq!(cfg.blur_sigma2, [0.5, 1.0]);
        assert_eq!(cfg.blur_sigma, [0.2, 3.0]);
        assert_eq!(cfg.jpeg_range2, [60, 100]);
    }

    #[test]
    fn unknown_key_fails() {
        assert!(toml::from_str::<DegradationConfig>("blur_sigmaa = [0.2, 3.0]\n").is_err());
        assert!(toml::from_str::<DegradationConfig>("[kernel_probs]\nisotropic = 0.5\n").is_err());
        assert!(toml::from_str::<DegradationConfig>("resize_modes = [\"nearest\"]\n").is_err());
    }

    #[test]
    fn invalid_values_fail_validate() {
        fn bad(f: impl FnOnce(&mut DegradationConfig)) -> Result<(), ConfigError> {
            let mut cfg = DegradationConfig::default();
            f(&mut cfg);
            cfg.validate()
        }
        assert_eq!(bad(|c| c.sinc_prob = 1.5).unwrap_err().field, "sinc_prob");
        assert_eq!(
            bad(|c| c.gray_noise_prob2 = -0.1).unwrap_err().field,
            "gray_noise_prob2"
        );
        assert_eq!(
            bad(|c| c.kernel_size = [7, 20]).unwrap_err().field,
            "kernel_size"
        );
        assert_eq!(
            bad(|c| c.kernel_size = [9, 7]).unwrap_err().field,
            "kernel_size"
        );
        assert_eq!(
            bad(|c| c.blur_sigma = [3.0, 0.2]).unwrap_err().field,
            "blur_sigma"
        );
        assert_eq!(
            bad(|c| c.blur_sigma2 = [0.0, 1.0]).unwrap_err().field,
            "blur_sigma2"
        );
        assert_eq!(
            bad(|c| c.jpeg_range2 = [60, 101]).unwrap_err().field,
            "jpeg_range2"
        );
        assert_eq!(
            bad(|c| c.noise_range = [f32::NAN, 1.0]).unwrap_err().field,
            "noise_range"
        );
        assert_eq!(bad(|c| c.scale = 0).unwrap_err().field, "scale");
        assert_eq!(
            bad(|c| c.resize_modes.clear()).unwrap_err().field,
            "resize_modes"
        );
        let zero = ResizeProbs {
            up: 0.0,
            down: 0.0,
            keep: 0.0,
        };
        assert_eq!(
            bad(|c| c.resize_prob2 = zero).unwrap_err().field,
            "resize_prob2"
        );
    }
}
