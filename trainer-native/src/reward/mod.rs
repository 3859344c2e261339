//! The attribute-aware reward of GDPO (method.md section 5), host-side and backend-free.
//!
//! - [`attribute_ratios`]: from the HR image, the fraction of "smooth" and "detail" pixels by
//!   the Sobel-entropy complexity of 10x10 patches (BT.601 gray with the correct weights; the
//!   reference code swaps R and B). Ratios are not rounded unless asked (the reference code
//!   rounds to 2 decimals).
//! - [`normalise_group`]: per-metric min-max over a group that never produces NaN (ties,
//!   identical samples, a group of one all give 0.5: no preference).
//! - [`group_advantages`]: `(R - mean) / (unbiased std + 1e-8)`, zero for a group of one.
//! - [`RewardMode`]: the paper's ablations (full ARF, fidelity only, detail only, fixed rho).
//!
//! The per-sample metric values come from pluggable [`RewardTerm`]s; the GDPO stage supplies
//! fidelity (PSNR-Y) and the no-reference detail terms.

pub mod nss;
pub mod realism;

use serde::{Deserialize, Serialize};

pub use nss::NssModel;

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::Backend;

use crate::{
    degrade::{Interp, ops::resize_plane},
    loss::discriminator::DiscriminatorConfig,
    metrics::psnr_y,
    planar::Planar,
};

/// Patch side of the complexity map.
pub const PATCH: usize = 10;
/// Side every patch is resized to before the Sobel filter.
pub const RESIZED: usize = 64;
/// Histogram of the gradient magnitude: bins over `[-HIST_RANGE, HIST_RANGE]`.
pub const HIST_BINS: usize = 512;
pub const HIST_RANGE: f64 = 5.5;
/// A patch is "detail" above this complexity (entropy in bits times patch area).
pub const DETAIL_THRESHOLD: f64 = 50.0;
/// PSNR of identical images is infinite; rewards cap it so that normalisation stays finite.
pub const MAX_PSNR: f64 = 100.0;

/// Smooth and detail fractions of an HR image (they sum to 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AttributeRatios {
    pub smooth: f64,
    pub detail: f64,
}

/// Gray in [0, 1]: `0.299 R + 0.587 G + 0.114 B` (BT.601).
pub fn gray_bt601(img: &Planar) -> Vec<f32> {
    let (r, g, b) = (img.plane(0), img.plane(1), img.plane(2));
    (0..r.len())
        .map(|i| (0.299 * r[i] + 0.587 * g[i] + 0.114 * b[i]).clamp(0.0, 1.0))
        .collect()
}

/// Sobel gradient magnitude with replicated borders.
fn sobel_magnitude(p: &[f32], w: usize, h: usize) -> Vec<f32> {
    let at = |x: isize, y: isize| {
        p[(y.clamp(0, h as isize - 1) as usize) * w + x.clamp(0, w as isize - 1) as usize]
    };
    let mut out = vec![0.0; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let gx = (at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1))
                - (at(x - 1, y - 1) + 2.0 * at(x - 1, y) + at(x - 1, y + 1));
            let gy = (at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1))
                - (at(x - 1, y - 1) + 2.0 * at(x, y - 1) + at(x + 1, y - 1));
            out[y as usize * w + x as usize] = (gx * gx + gy * gy).sqrt();
        }
    }
    out
}

/// Entropy in bits of the normalised 512-bin histogram of `values` over [-5.5, 5.5]
/// (values outside are not counted, as `torch.histc` does): `-sum p log2(p + 1e-10)`.
pub fn histogram_entropy(values: &[f32]) -> f64 {
    let mut hist = [0u32; HIST_BINS];
    let width = 2.0 * HIST_RANGE / HIST_BINS as f64;
    let mut counted = 0u32;
    for &v in values {
        let v = f64::from(v);
        if (-HIST_RANGE..=HIST_RANGE).contains(&v) {
            let bin = (((v + HIST_RANGE) / width) as usize).min(HIST_BINS - 1);
            hist[bin] += 1;
            counted += 1;
        }
    }
    if counted == 0 {
        return 0.0;
    }
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / f64::from(counted);
            -p * (p + 1e-10).log2()
        })
        .sum()
}

/// Sobel-entropy of one gray patch: resized to 64x64 (bilinear, `align_corners = false`),
/// gradient magnitude, histogram entropy.
pub fn patch_entropy(patch: &[f32], w: usize, h: usize) -> f64 {
    let resized = resize_plane(patch, w, h, RESIZED, RESIZED, Interp::Bilinear);
    histogram_entropy(&sobel_magnitude(&resized, RESIZED, RESIZED))
}

/// Smooth/detail fractions of an HR image (method.md section 5, steps 1-4). `round` rounds
/// both to 2 decimals as the reference code does (off by default).
pub fn attribute_ratios(hr: &Planar, round: bool) -> AttributeRatios {
    let gray = gray_bt601(hr);
    let (w, h) = (hr.width, hr.height);
    let mut detail_pixels = 0usize;
    for y0 in (0..h).step_by(PATCH) {
        for x0 in (0..w).step_by(PATCH) {
            let (pw, ph) = (PATCH.min(w - x0), PATCH.min(h - y0));
            let patch: Vec<f32> = (y0..y0 + ph)
                .flat_map(|y| gray[y * w + x0..y * w + x0 + pw].iter().copied())
                .collect();
            if patch_entropy(&patch, pw, ph) * (pw * ph) as f64 > DETAIL_THRESHOLD {
                detail_pixels += pw * ph;
            }
        }
    }
    let mut detail = detail_pixels as f64 / (w * h).max(1) as f64;
    if round {
        detail = (detail * 100.0).round() / 100.0;
    }
    AttributeRatios {
        smooth: 1.0 - detail,
        detail,
    }
}

/// Min-max normalisation within a group, NaN-free: a metric that ties across the group
/// (identical samples, a group of one) carries no preference and gives 0.5 everywhere.
/// Non-finite values are treated as the group's extremes (+inf best, -inf/NaN worst).
pub fn normalise_group(values: &[f64]) -> Vec<f64> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    values
        .iter()
        .map(|&v| {
            if v == f64::INFINITY {
                1.0
            } else if !v.is_finite() {
                0.0
            } else if hi - lo > 1e-12 {
                (v - lo) / (hi - lo)
            } else {
                0.5
            }
        })
        .collect()
}

/// Group-relative advantages `(R - mean) / (unbiased std + 1e-8)`; they sum to 0. A group
/// of one has no relative information: advantage 0.
pub fn group_advantages(rewards: &[f64]) -> Vec<f64> {
    let n = rewards.len();
    if n < 2 {
        return vec![0.0; n];
    }
    let mean = rewards.iter().sum::<f64>() / n as f64;
    let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    rewards.iter().map(|r| (r - mean) / (std + 1e-8)).collect()
}

/// Which parts of the reward count (the paper's ablation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum RewardMode {
    /// `rho_s * fidelity + rho_d * detail` with the HR's own ratios (ARF).
    Full,
    /// PSNR-Y only.
    FidelityOnly,
    /// The no-reference terms only.
    DetailOnly,
    /// The same weights for every image: `(1 - rho) * fidelity + rho * detail`.
    FixedRho { rho: f64 },
}

/// One per-sample metric of the reward (higher is better). Terms score whole batches, so a
/// learned term can run its network once for many samples.
pub trait RewardTerm: Send + Sync {
    fn name(&self) -> &str;
    /// One score per sample; full-reference terms compare `samples[i]` with `references[i]`,
    /// no-reference terms ignore `references`.
    fn score(&self, samples: &[Planar], references: &[Planar]) -> Vec<f64>;
}

/// PSNR-Y against the HR (the fidelity term), capped at [`MAX_PSNR`].
pub struct PsnrY {
    pub border: usize,
}

impl RewardTerm for PsnrY {
    fn name(&self) -> &str {
        "psnr_y"
    }
    fn score(&self, samples: &[Planar], references: &[Planar]) -> Vec<f64> {
        assert_eq!(samples.len(), references.len(), "one HR per sample");
        samples
            .iter()
            .zip(references)
            .map(|(s, r)| psnr_y(s, r, self.border).min(MAX_PSNR))
            .collect()
    }
}

/// The NSS naturalness measure as a reward term: the negated [`NssModel::distance`].
pub struct NssNaturalness(pub NssModel);

impl RewardTerm for NssNaturalness {
    fn name(&self) -> &str {
        "nss"
    }
    fn score(&self, samples: &[Planar], _references: &[Planar]) -> Vec<f64> {
        use rayon::prelude::*;
        samples.par_iter().map(|s| -self.0.distance(s)).collect()
    }
}

/// An unscorable sample (smaller than the metric's minimum, flat) is the group's worst.
fn negated_or_worst(score: anyhow::Result<f64>) -> f64 {
    score.map_or(f64::NEG_INFINITY, |v| -v)
}

/// NIQE with the standard pristine model ([`crate::iqa::Niqe`]) as a reward term: the negated
/// score (lower NIQE is more natural). Samples NIQE cannot score (smaller than 96x96, flat)
/// get `-inf`, the worst of their group ([`normalise_group`]).
pub struct NiqeNaturalness(pub crate::iqa::Niqe);

impl RewardTerm for NiqeNaturalness {
    fn name(&self) -> &str {
        "niqe"
    }
    fn score(&self, samples: &[Planar], _references: &[Planar]) -> Vec<f64> {
        use rayon::prelude::*;
        samples
            .par_iter()
            .map(|s| negated_or_worst(self.0.score(s)))
            .collect()
    }
}

/// BRISQUE with the LIVE-trained SVR ([`crate::iqa::Brisque`]) as a reward term: the negated
/// *unclamped* SVR output ([`crate::iqa::Brisque::raw_score`]), so that samples beyond
/// OpenCV's [0, 100] clamp still rank; flat samples get `-inf`.
pub struct BrisqueQuality(pub crate::iqa::Brisque);

impl RewardTerm for BrisqueQuality {
    fn name(&self) -> &str {
        "brisque"
    }
    fn score(&self, samples: &[Planar], _references: &[Planar]) -> Vec<f64> {
        use rayon::prelude::*;
        samples
            .par_iter()
            .map(|s| negated_or_worst(self.0.raw_score(s)))
            .collect()
    }
}

/// The standard no-reference image-quality terms a config can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IqaTermName {
    /// [`NiqeNaturalness`].
    Niqe,
    /// [`BrisqueQuality`].
    Brisque,
}

impl IqaTermName {
    /// Every name, in the order [`IqaTerms::build`] keeps.
    pub const ALL: [IqaTermName; 2] = [IqaTermName::Niqe, IqaTermName::Brisque];

    /// The term's name (`"niqe"`, `"brisque"`), as [`RewardTerm::name`] reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            IqaTermName::Niqe => "niqe",
            IqaTermName::Brisque => "brisque",
        }
    }

    /// Loads the term's standard model from `dir` (`../shared/iqa`).
    ///
    /// # Errors
    /// When the model file is missing (the message names it and its hash) or wrong.
    pub fn build(self, dir: &std::path::Path) -> anyhow::Result<Box<dyn RewardTerm>> {
        Ok(match self {
            IqaTermName::Niqe => Box::new(NiqeNaturalness(crate::iqa::Niqe::load(dir)?)),
            IqaTermName::Brisque => Box::new(BrisqueQuality(crate::iqa::Brisque::load(dir)?)),
        })
    }
}

impl std::str::FromStr for IqaTermName {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown IQA reward term {s:?} (niqe, brisque)"))
    }
}

/// Standard no-reference IQA terms of the reward: a TOML table such as
/// `terms = ["niqe", "brisque"]` (`dir` defaults to [`crate::iqa::DEFAULT_DIR`]); the detail
/// term of the real model's GDPO (`configs/gdpo-taef2.toml`: BRISQUE and NIQE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IqaTerms {
    #[serde(default)]
    pub terms: Vec<IqaTermName>,
    /// The folder of the model files.
    #[serde(default = "default_iqa_dir")]
    pub dir: PathBuf,
}

fn default_iqa_dir() -> PathBuf {
    PathBuf::from(crate::iqa::DEFAULT_DIR)
}

impl Default for IqaTerms {
    fn default() -> Self {
        Self {
            terms: Vec::new(),
            dir: default_iqa_dir(),
        }
    }
}

impl IqaTerms {
    /// Loads the named terms, in the configured order (each name once).
    ///
    /// # Errors
    /// When a model file is missing or wrong, or a name is repeated.
    pub fn build(&self) -> anyhow::Result<Vec<Box<dyn RewardTerm>>> {
        let mut terms: Vec<Box<dyn RewardTerm>> = Vec::new();
        for (i, name) in self.terms.iter().enumerate() {
            anyhow::ensure!(
                !self.terms[..i].contains(name),
                "IQA reward term {} named twice",
                name.as_str()
            );
            terms.push(name.build(&self.dir)?);
        }
        Ok(terms)
    }
}

/// The attribute-aware reward: a fidelity term and the no-reference detail terms, combined
/// per group by [`group_rewards`].
pub struct Reward {
    pub mode: RewardMode,
    pub fidelity: Box<dyn RewardTerm>,
    pub detail: Vec<Box<dyn RewardTerm>>,
}

/// Which no-reference detail terms the reward uses (the `[reward.detail]` table; `eval`'s
/// `--discriminator` / `--nss`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailTerms {
    /// `discriminator.bin` of a NAOSD run: the realism term.
    #[serde(default)]
    pub discriminator: Option<PathBuf>,
    /// The channels that discriminator was trained with.
    #[serde(default = "default_discriminator_channels")]
    pub discriminator_channels: Vec<usize>,
    /// An NSS model (`trainer-native fit-nss`): the naturalness term.
    #[serde(default)]
    pub nss: Option<PathBuf>,
    /// The standard NIQE / BRISQUE terms ([`IqaTerms`]).
    #[serde(default)]
    pub iqa: IqaTerms,
}

fn default_discriminator_channels() -> Vec<usize> {
    DiscriminatorConfig::default().channels
}

impl Default for DetailTerms {
    fn default() -> Self {
        Self {
            discriminator: None,
            discriminator_channels: default_discriminator_channels(),
            nss: None,
            iqa: IqaTerms::default(),
        }
    }
}

impl DetailTerms {
    /// Loads the configured terms (realism first, then NSS).
    ///
    /// # Errors
    /// When a file is missing or does not match.
    pub fn build<B: Backend>(
        &self,
        device: &B::Device,
    ) -> anyhow::Result<Vec<Box<dyn RewardTerm>>> {
        let mut terms: Vec<Box<dyn RewardTerm>> = Vec::new();
        if let Some(path) = &self.discriminator {
            let config = DiscriminatorConfig {
                channels: self.discriminator_channels.clone(),
            };
            terms.push(Box::new(realism::DiscriminatorRealism::<B>::load(
                path, &config, device,
            )?));
        }
        if let Some(path) = &self.nss {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let model = NssModel::from_json(&bytes).with_context(|| path.display().to_string())?;
            terms.push(Box::new(NssNaturalness(model)));
        }
        terms.extend(self.iqa.build()?);
        Ok(terms)
    }
}

/// The mean reward of each method on one image when the outputs of all methods (any number
/// of samples each) form one group: how the reward ranks them against each other.
pub fn pooled_method_rewards(
    reward: &Reward,
    hr: &Planar,
    ratios: AttributeRatios,
    outputs: &[Vec<Planar>],
) -> Vec<f64> {
    let pool: Vec<Planar> = outputs.iter().flatten().cloned().collect();
    let scored = reward.score_groups(&pool, std::slice::from_ref(hr), &[ratios], pool.len());
    let mut start = 0;
    outputs
        .iter()
        .map(|o| {
            let span = &scored.rewards[0][start..start + o.len()];
            start += o.len();
            span.iter().sum::<f64>() / o.len().max(1) as f64
        })
        .collect()
}

/// Raw metric values of a batch of samples and the rewards of its groups.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredGroups {
    /// Fidelity per sample.
    pub fidelity: Vec<f64>,
    /// `detail[term][sample]`.
    pub detail: Vec<Vec<f64>>,
    /// `rewards[group][member]`.
    pub rewards: Vec<Vec<f64>>,
}

impl Reward {
    /// Names of the detail terms, in the order of [`ScoredGroups::detail`].
    pub fn detail_names(&self) -> Vec<String> {
        self.detail.iter().map(|t| t.name().to_string()).collect()
    }

    /// Scores `samples` (consecutive groups of `group` members; group `b` belongs to
    /// `hr[b]` with `ratios[b]`) and computes each group's rewards.
    ///
    /// # Panics
    /// When the lengths do not match.
    pub fn score_groups(
        &self,
        samples: &[Planar],
        hr: &[Planar],
        ratios: &[AttributeRatios],
        group: usize,
    ) -> ScoredGroups {
        assert!(group > 0 && samples.len() == hr.len() * group && hr.len() == ratios.len());
        let references: Vec<Planar> = hr
            .iter()
            .flat_map(|h| std::iter::repeat_n(h.clone(), group))
            .collect();
        let fidelity = self.fidelity.score(samples, &references);
        let detail: Vec<Vec<f64>> = self
            .detail
            .iter()
            .map(|t| t.score(samples, &references))
            .collect();
        let rewards = (0..hr.len())
            .map(|b| {
                let span = b * group..(b + 1) * group;
                let det: Vec<Vec<f64>> = detail.iter().map(|d| d[span.clone()].to_vec()).collect();
                group_rewards(self.mode, ratios[b], &fidelity[span], &det)
            })
            .collect();
        ScoredGroups {
            fidelity,
            detail,
            rewards,
        }
    }
}

/// The group's rewards from per-sample fidelity scores and per-term detail scores (each
/// `detail[t][g]`), normalised per metric within the group.
pub fn group_rewards(
    mode: RewardMode,
    ratios: AttributeRatios,
    fidelity: &[f64],
    detail: &[Vec<f64>],
) -> Vec<f64> {
    let g = fidelity.len();
    let fid = normalise_group(fidelity);
    let det: Vec<f64> = if detail.is_empty() {
        vec![0.0; g]
    } else {
        let normalised: Vec<Vec<f64>> = detail.iter().map(|d| normalise_group(d)).collect();
        (0..g)
            .map(|i| normalised.iter().map(|d| d[i]).sum::<f64>() / normalised.len() as f64)
            .collect()
    };
    let (ws, wd) = match mode {
        RewardMode::Full => (ratios.smooth, ratios.detail),
        RewardMode::FidelityOnly => (1.0, 0.0),
        RewardMode::DetailOnly => (0.0, 1.0),
        RewardMode::FixedRho { rho } => (1.0 - rho, rho),
    };
    (0..g).map(|i| ws * fid[i] + wd * det[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn image(w: usize, h: usize, mut f: impl FnMut(usize, usize) -> f32) -> Planar {
        let mut p = Planar::zeros(w, h);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    *p.get_mut(c, x, y) = f(x, y);
                }
            }
        }
        p
    }

    #[test]
    fn flat_image_is_all_smooth() {
        let r = attribute_ratios(&image(37, 23, |_, _| 0.4), false);
        assert_eq!((r.smooth, r.detail), (1.0, 0.0));
    }

    #[test]
    fn noise_is_almost_all_detail() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let noise = image(60, 40, |_, _| rng.random::<f32>());
        let r = attribute_ratios(&noise, false);
        assert!(r.detail > 0.95, "{r:?}");
        assert!((r.smooth + r.detail - 1.0).abs() < 1e-12);
    }

    #[test]
    fn entropy_by_hand() {
        // Two values in two bins, equally often: exactly 1 bit (up to the 1e-10 guard).
        assert!((histogram_entropy(&[0.0, 0.0, 1.0, 1.0]) - 1.0).abs() < 1e-8);
        // Four bins, equally: 2 bits. One bin: 0 bits. Values outside [-5.5, 5.5] are ignored.
        assert!((histogram_entropy(&[0.0, 1.0, 2.0, 3.0]) - 2.0).abs() < 1e-8);
        assert!(histogram_entropy(&[0.25; 9]).abs() < 1e-8);
        assert!((histogram_entropy(&[0.0, 1.0, 9.0, -7.0]) - 1.0).abs() < 1e-8);
        // p = (3/4, 1/4): 0.811278 bits.
        let h = histogram_entropy(&[0.0, 0.0, 0.0, 2.0]);
        assert!((h - 0.811_278_124_459_132_9).abs() < 1e-8, "{h}");
        // A flat patch has zero gradient everywhere: one bin, 0 bits.
        assert!(patch_entropy(&[0.7; 100], 10, 10).abs() < 1e-8);
    }

    #[test]
    fn gray_uses_bt601_weights_in_the_right_order() {
        let mut red = Planar::zeros(1, 1);
        *red.get_mut(0, 0, 0) = 1.0;
        assert!((gray_bt601(&red)[0] - 0.299).abs() < 1e-6);
    }

    #[test]
    fn normalisation_never_gives_nan() {
        assert_eq!(normalise_group(&[3.0, 3.0, 3.0]), vec![0.5; 3]);
        assert_eq!(normalise_group(&[7.0]), vec![0.5]);
        assert_eq!(normalise_group(&[1.0, 3.0, 2.0]), vec![0.0, 1.0, 0.5]);
        let odd = normalise_group(&[f64::INFINITY, 1.0, f64::NAN, 2.0]);
        assert_eq!(odd, vec![1.0, 0.0, 0.0, 1.0]);
        assert!(normalise_group(&[]).is_empty());
    }

    #[test]
    fn advantages_are_standardised_and_sum_to_zero() {
        let a = group_advantages(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(a.iter().sum::<f64>().abs() < 1e-12);
        let var = a.iter().map(|v| v * v).sum::<f64>() / 5.0;
        assert!((var - 1.0).abs() < 1e-6, "unbiased std is 1");
        assert_eq!(group_advantages(&[4.0]), vec![0.0]);
        assert_eq!(group_advantages(&[2.0, 2.0]), vec![0.0, 0.0]);
        // G = 2: +-1/sqrt(2) (the Diffusion-DPO case).
        let two = group_advantages(&[0.0, 1.0]);
        assert!((two[1] - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }

    #[test]
    fn reward_modes_weight_the_terms() {
        let ratios = AttributeRatios {
            smooth: 0.25,
            detail: 0.75,
        };
        let fidelity = [10.0, 20.0];
        let detail = vec![vec![5.0, 1.0], vec![0.3, 0.1]];
        let full = group_rewards(RewardMode::Full, ratios, &fidelity, &detail);
        assert_eq!(full, vec![0.75, 0.25]);
        assert_eq!(
            group_rewards(RewardMode::FidelityOnly, ratios, &fidelity, &detail),
            vec![0.0, 1.0]
        );
        assert_eq!(
            group_rewards(RewardMode::DetailOnly, ratios, &fidelity, &detail),
            vec![1.0, 0.0]
        );
        assert_eq!(
            group_rewards(
                RewardMode::FixedRho { rho: 0.5 },
                ratios,
                &fidelity,
                &detail
            ),
            vec![0.5, 0.5]
        );
    }

    #[test]
    fn iqa_terms_are_named_in_configs() {
        let cfg: IqaTerms = toml::from_str(r#"terms = ["brisque", "niqe"]"#).unwrap();
        assert_eq!(cfg.terms, vec![IqaTermName::Brisque, IqaTermName::Niqe]);
        assert_eq!(cfg.dir, PathBuf::from(crate::iqa::DEFAULT_DIR));
        assert!(toml::from_str::<IqaTerms>(r#"terms = ["musiq"]"#).is_err());
        assert_eq!("niqe".parse::<IqaTermName>().unwrap(), IqaTermName::Niqe);
        assert!("NIQE".parse::<IqaTermName>().is_err());
        assert!(IqaTerms::default().build().unwrap().is_empty());
        let twice = IqaTerms {
            terms: vec![IqaTermName::Niqe, IqaTermName::Niqe],
            dir: PathBuf::from("/nonexistent"),
        };
        assert!(twice.build().is_err());
        // A missing model is an error naming the file, not a silent no-op.
        let missing = IqaTerms {
            terms: vec![IqaTermName::Brisque],
            dir: PathBuf::from("/nonexistent"),
        };
        let msg = format!("{:#}", missing.build().err().unwrap());
        assert!(msg.contains("brisque_model_live.yml"), "{msg}");
    }

    #[test]
    fn iqa_terms_score_negated_and_unscorable_is_worst() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/iqa");
        if !dir.join(crate::iqa::NIQE_PARAMS.name).exists() {
            eprintln!("skipped: {} absent", dir.display());
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let textured = image(128, 128, |x, y| {
            (0.3 + 0.3 * ((x as f32 / 9.0).sin() * (y as f32 / 7.0).cos())
                + 0.1 * rng.random::<f32>())
            .clamp(0.0, 1.0)
        });
        let flat = image(128, 128, |_, _| 0.5);
        let tiny = image(40, 40, |x, y| ((x * y) % 7) as f32 / 7.0);
        let terms = IqaTerms {
            terms: IqaTermName::ALL.to_vec(),
            dir,
        }
        .build()
        .unwrap();
        assert_eq!(terms[0].name(), "niqe");
        assert_eq!(terms[1].name(), "brisque");
        let samples = [textured.clone(), flat, tiny];
        for t in &terms {
            let s = t.score(&samples, &[]);
            assert!(s[0].is_finite(), "{}: {s:?}", t.name());
            assert_eq!(s[1], f64::NEG_INFINITY, "{}: flat", t.name());
            assert_eq!(normalise_group(&s)[1], 0.0);
        }
        // NIQE cannot score below 96x96; BRISQUE can.
        assert_eq!(terms[0].score(&samples[2..], &[])[0], f64::NEG_INFINITY);
        assert!(terms[1].score(&samples[2..], &[])[0].is_finite());
    }

    #[test]
    fn psnr_term_is_capped_for_identical_images() {
        let img = image(12, 12, |x, y| (x * y) as f32 / 144.0);
        let scores = PsnrY { border: 0 }.score(
            &[img.clone(), img.clone()],
            &[img.clone(), image(12, 12, |_, _| 0.5)],
        );
        assert_eq!(scores[0], MAX_PSNR);
        assert!(scores[1] < 30.0);
    }
}
