//! Standard image-quality metrics, native and deterministic (docs/quality.md, "Metrics").
//!
//! No-reference, with the standard models their authors fitted (read from `../shared/iqa/`,
//! each file checked against its SHA-256; they are data, never committed to the project):
//!
//! - [`Niqe`]: NIQE (Mittal, Soundararajan and Bovik 2013) with the pristine model and protocol
//!   of BasicSR's `calculate_niqe`, the figure SR papers report (lower is better).
//! - [`Brisque`]: BRISQUE (Mittal, Moorthy and Bovik 2012) with the LIVE-trained SVR of OpenCV
//!   contrib's `QualityBRISQUE`, computed with OpenCV's own arithmetic (lower is better).
//!
//! Full-reference, weight-free, each from its paper on the luma: [`ms_ssim`] (Wang, Simoncelli
//! and Bovik 2003), [`gmsd`] (Xue et al. 2014), [`haarpsi`] (Reisenhofer et al. 2018). PSNR and
//! SSIM are in [`crate::metrics`].
//!
//! Every function takes the project's [`Planar`] images (RGB in [0, 1]) and returns an error,
//! never a NaN or a panic, for inputs a metric cannot score (too small, flat).

mod brisque;
mod full_reference;
mod linalg;
mod niqe;
mod resample;

pub use brisque::{BRISQUE_FEATURES, Brisque};
pub use full_reference::{gmsd, haarpsi, ms_ssim};
pub use niqe::{NIQE_BLOCK, NIQE_FEATURES, Niqe};

use crate::{planar::Planar, third_party::ThirdPartyFile};

/// Where the models live, relative to the repository root (`../shared/iqa/README.md`).
pub const DEFAULT_DIR: &str = "../shared/iqa";

const IQA_README: &str = "the standard model files are described in ../shared/iqa/README.md";

/// NIQE's pristine model (BasicSR's `niqe_pris_params.npz`).
pub const NIQE_PARAMS: ThirdPartyFile = ThirdPartyFile {
    name: "niqe_pris_params.npz",
    what: "the image-quality model",
    described_in: IQA_README,
    sha256: "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296",
};
/// BRISQUE's LIVE-trained SVR (OpenCV contrib's `brisque_model_live.yml`).
pub const BRISQUE_MODEL: ThirdPartyFile = ThirdPartyFile {
    name: "brisque_model_live.yml",
    what: "the image-quality model",
    described_in: IQA_README,
    sha256: "4c44c7eec9e5139830c0bb0e4a044c9cd351ba5bbc9e3798beca3243e2782ff4",
};
/// BRISQUE's feature ranges (OpenCV contrib's `brisque_range_live.yml`).
pub const BRISQUE_RANGE: ThirdPartyFile = ThirdPartyFile {
    name: "brisque_range_live.yml",
    what: "the image-quality model",
    described_in: IQA_README,
    sha256: "a18427f4f7ad087524bd0d63389649a3899b51ca6d44a4d5f8d8171f1f914a9c",
};

/// An RGB channel in [0, 1] as the 8-bit value a PNG of it holds (clamped, rounded, as
/// [`Planar::to_rgb8`]). Both no-reference models were defined on 8-bit images: scoring
/// the quantised image makes `score(img)` equal the score of the saved PNG.
fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// The 8-bit RGB triplets of an image, pixel by pixel.
fn rgb8_pixels(img: &Planar) -> impl Iterator<Item = [u8; 3]> + '_ {
    let (r, g, b) = (img.plane(0), img.plane(1), img.plane(2));
    (0..r.len()).map(move |i| [to_u8(r[i]), to_u8(g[i]), to_u8(b[i])])
}

/// BT.601 studio-range luma of the 8-bit image, `16 + (65.481 R + 128.553 G + 24.966 B) / 255`
/// in grey levels, rounded half to even (numpy's `round`, as BasicSR rounds "for consistency
/// with MATLAB"): integers in [16, 235].
pub fn luma_rounded(img: &Planar) -> Vec<f64> {
    rgb8_pixels(img)
        .map(|[r, g, b]| {
            let y = 16.0
                + (65.481 * f64::from(r) + 128.553 * f64::from(g) + 24.966 * f64::from(b)) / 255.0;
            y.round_ties_even()
        })
        .collect()
}

/// OpenCV's `cvtColor(BGR2GRAY)` of the 8-bit image: `(9798 R + 19235 G + 3735 B + 2^14) >> 15`.
pub fn gray_opencv(img: &Planar) -> Vec<u8> {
    rgb8_pixels(img)
        .map(|[r, g, b]| {
            ((9798 * u32::from(r) + 19235 * u32::from(g) + 3735 * u32::from(b) + (1 << 14)) >> 15)
                as u8
        })
        .collect()
}

/// `Γ(2/a)^2 / (Γ(1/a) Γ(3/a))`: the moment ratio `E[|x|]^2 / E[x^2]` of a generalised
/// Gaussian of shape `a`, which the (A)GGD fits invert on a grid of shapes.
fn shape_ratio(a: f64) -> f64 {
    let g2 = libm::tgamma(2.0 / a);
    g2 * g2 / (libm::tgamma(1.0 / a) * libm::tgamma(3.0 / a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_and_gray_of_primaries() {
        let mut img = Planar::zeros(3, 1);
        *img.get_mut(0, 0, 0) = 1.0; // red
        *img.get_mut(1, 1, 0) = 1.0; // green
        *img.get_mut(2, 2, 0) = 1.0; // blue
        assert_eq!(luma_rounded(&img), vec![81.0, 145.0, 41.0]);
        // 0.299, 0.587, 0.114 of 255, OpenCV's fixed point.
        assert_eq!(gray_opencv(&img), vec![76, 150, 29]);
        let white = Planar {
            width: 1,
            height: 1,
            data: vec![1.0; 3],
        };
        assert_eq!(luma_rounded(&white), vec![235.0]);
        assert_eq!(gray_opencv(&white), vec![255]);
    }

    #[test]
    fn shape_ratio_is_increasing() {
        // The Gaussian (a = 2) has E|x|^2 / E[x^2] = 2 / pi.
        assert!((shape_ratio(2.0) - 2.0 / std::f64::consts::PI).abs() < 1e-12);
        let mut prev = 0.0;
        for k in 0..=9800 {
            let r = shape_ratio(0.2 + 0.001 * f64::from(k));
            assert!(r > prev);
            prev = r;
        }
    }

    #[test]
    fn missing_model_names_the_path_and_hash() {
        let err = NIQE_PARAMS
            .read(std::path::Path::new("/nonexistent-iqa-dir"))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("/nonexistent-iqa-dir/niqe_pris_params.npz"),
            "{msg}"
        );
        assert!(msg.contains(NIQE_PARAMS.sha256), "{msg}");
    }

    #[test]
    fn wrong_content_is_rejected() {
        let dir = std::env::temp_dir().join(format!("iqa-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(BRISQUE_RANGE.name), b"range: []").unwrap();
        let msg = format!("{:#}", BRISQUE_RANGE.read(&dir).unwrap_err());
        assert!(msg.contains("expected a18427f4"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
