//! The check that comes before GDPO training (issue 19, docs/gdpo.md): do the reference's
//! samples differ enough within a group for the reward to rank them?
//!
//! The reward is normalised per metric *within* a group (`crate::reward::group_rewards`), so
//! any difference between the samples, however small, becomes a full-scale ranking. Whether
//! that ranking is signal or noise is measured here, on training batches of the run's own
//! config, with the run's own sampler and reward: for each term (fidelity, every detail term,
//! the combined reward)
//!
//! - how much it varies within a group against how much it varies between images, and
//! - how often two views of the same samples (the crop less `shift` pixels at the top-left,
//!   and less `shift` at the bottom-right) order a pair of samples alike. A term whose
//!   within-group differences come from the samples' content orders them the same in both
//!   views; one whose differences are measurement noise agrees about half the time.
//!
//! and the samples' own pixel diversity (mean per-pixel standard deviation across the group,
//! 8-bit), the measure of issue 18.

use std::fmt::Write as _;

use super::{BatchSource, GdpoConfig, sample_groups, sample_noise};
use crate::{
    backend::BackendTask, data::ImageFolder, export::read_weights, image_io::tensor_to_planars,
    planar::Planar,
};
use anyhow::{Context, ensure};
use burn::tensor::backend::Backend;

/// How one term of the reward behaves across the probe's groups.
#[derive(Debug, Clone, PartialEq)]
pub struct TermSpread {
    pub name: String,
    /// Mean over groups of the term's population standard deviation within the group.
    pub within_group_std: f64,
    /// Standard deviation over groups of the group's mean (how much the images differ).
    pub between_group_std: f64,
    /// Fraction of sample pairs within a group that the two views order alike (ties agree
    /// only with ties).
    pub pair_agreement: f64,
}

/// What [`probe`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    pub groups: usize,
    pub group_size: usize,
    pub crop: usize,
    pub shift: usize,
    /// Mean over groups and pixels of the standard deviation across the group's samples, in
    /// 8-bit levels.
    pub pixel_std_8bit: f64,
    /// Fidelity (`psnr_y`), each detail term, then the combined `reward`.
    pub terms: Vec<TermSpread>,
}

impl ProbeReport {
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "{} groups of {} samples, {}px crops, views shifted by {} px; pixel diversity \
             within a group: {:.3} of 255\n\n\
             | term | within-group std | between-image std | within / between | pairs \
             ordered alike by both views |\n|---|---:|---:|---:|---:|\n",
            self.groups, self.group_size, self.crop, self.shift, self.pixel_std_8bit
        );
        for t in &self.terms {
            let _ = writeln!(
                s,
                "| {} | {:.4} | {:.4} | {:.3} | {:.2} |",
                t.name,
                t.within_group_std,
                t.between_group_std,
                t.within_group_std / t.between_group_std.max(f64::MIN_POSITIVE),
                t.pair_agreement
            );
        }
        s
    }
}

/// Samples `batches` training batches of `config` (the run's data, degradation, sampler noise
/// and reward) with its reference and measures how the reward's terms spread.
///
/// # Errors
/// Unreadable reference, data or reward files; a `shift` that leaves no image.
pub fn probe<B: Backend>(
    config: &GdpoConfig,
    batches: usize,
    shift: usize,
    device: &B::Device,
) -> anyhow::Result<ProbeReport> {
    config.validate()?;
    ensure!(batches > 0, "the probe needs at least one batch");
    ensure!(
        shift + 16 <= config.crop,
        "shift {shift} leaves less than 16 px of the {} px crop",
        config.crop
    );
    let reference = read_weights::<B>(&config.reference, device)?;
    let reward = config.reward.build::<B>(device)?;
    let dataset = ImageFolder::load(&config.data, config.crop)?;
    let source = BatchSource {
        dataset: &dataset,
        degradation: &config.degradation,
        crop: config.crop,
        batch: config.train.batch,
        seed: config.train.seed,
        round_ratios: config.reward.round_ratios,
    };
    let group = config.group;
    let names: Vec<String> = std::iter::once("psnr_y".to_string())
        .chain(reward.detail_names())
        .chain(std::iter::once("reward".to_string()))
        .collect();
    // values[view][term] = one Vec per group.
    let mut values: [Vec<Vec<Vec<f64>>>; 2] =
        [vec![Vec::new(); names.len()], vec![Vec::new(); names.len()]];
    let mut pixel_std = Vec::new();
    for step in 0..batches {
        let batch = source.batch(step)?;
        let noise = sample_noise(config, step, batch.hr.len() * group);
        let lr = batch.lr.to_tensor::<B>(device);
        let samples =
            sample_groups(&reference, lr, group, &config.inference_options(), noise)?.samples;
        let samples = tensor_to_planars(samples).context("3-channel samples")?;
        for members in samples.chunks(group) {
            pixel_std.push(pixel_std_8bit(members));
        }
        let side = config.crop - shift;
        for (view, at) in [0, shift].into_iter().enumerate() {
            let cut = |p: &Planar| p.crop(at, at, side, side);
            let s: Vec<Planar> = samples.iter().map(cut).collect();
            let hr: Vec<Planar> = batch.hr.iter().map(cut).collect();
            let scored = reward.score_groups(&s, &hr, &batch.ratios, group);
            let per_term = std::iter::once(&scored.fidelity)
                .chain(&scored.detail)
                .map(|v| v.chunks(group).map(<[f64]>::to_vec).collect::<Vec<_>>())
                .chain(std::iter::once(scored.rewards.clone()));
            for (slot, groups) in values[view].iter_mut().zip(per_term) {
                slot.extend(groups);
            }
        }
    }
    let terms = names
        .into_iter()
        .enumerate()
        .map(|(t, name)| spread(name, &values[0][t], &values[1][t]))
        .collect();
    Ok(ProbeReport {
        groups: pixel_std.len(),
        group_size: group,
        crop: config.crop,
        shift,
        pixel_std_8bit: mean(&pixel_std),
        terms,
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn std(v: &[f64]) -> f64 {
    let m = mean(v);
    mean(&v.iter().map(|x| (x - m).powi(2)).collect::<Vec<_>>()).sqrt()
}

/// A term's spread from its per-group values in the two views.
fn spread(name: String, a: &[Vec<f64>], b: &[Vec<f64>]) -> TermSpread {
    let (mut agree, mut pairs) = (0usize, 0usize);
    for (ga, gb) in a.iter().zip(b) {
        for i in 0..ga.len() {
            for j in i + 1..ga.len() {
                pairs += 1;
                let order = |g: &[f64]| g[i].partial_cmp(&g[j]);
                agree += usize::from(order(ga) == order(gb));
            }
        }
    }
    let within: Vec<f64> = a.iter().map(|g| std(g)).collect();
    let means: Vec<f64> = a.iter().map(|g| mean(g)).collect();
    TermSpread {
        name,
        within_group_std: mean(&within),
        between_group_std: std(&means),
        pair_agreement: agree as f64 / pairs.max(1) as f64,
    }
}

/// Mean over pixels of the standard deviation across `members`, in 8-bit levels.
fn pixel_std_8bit(members: &[Planar]) -> f64 {
    let len = members[0].data.len();
    let per_pixel: Vec<f64> = (0..len)
        .map(|k| {
            std(&members
                .iter()
                .map(|p| f64::from(p.data[k]))
                .collect::<Vec<_>>())
        })
        .collect();
    mean(&per_pixel) * 255.0
}

/// [`probe`] as a [`BackendTask`] for the CLI.
pub struct ProbeRun<'a> {
    pub config: &'a GdpoConfig,
    pub batches: usize,
    pub shift: usize,
}

impl BackendTask for ProbeRun<'_> {
    type Output = ProbeReport;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<ProbeReport> {
        probe::<B>(self.config, self.batches, self.shift, &device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_views_order_every_pair_alike_and_reversed_ones_none() {
        let a = vec![vec![1.0, 2.0, 3.0], vec![0.5, 0.1, 0.9]];
        let same = spread("t".into(), &a, &a);
        assert_eq!(same.pair_agreement, 1.0);
        let reversed: Vec<Vec<f64>> = a.iter().map(|g| g.iter().map(|x| -x).collect()).collect();
        assert_eq!(spread("t".into(), &a, &reversed).pair_agreement, 0.0);
        // Within: mean of the two groups' std; between: std of the means (2.0 and 0.5).
        assert!((same.within_group_std - (0.816_496_6 + 0.326_598_6) / 2.0).abs() < 1e-6);
        assert!((same.between_group_std - 0.75).abs() < 1e-12);
    }

    #[test]
    fn pixel_diversity_is_in_8bit_levels() {
        let mut a = Planar::zeros(2, 2);
        let b = Planar::zeros(2, 2);
        a.data.iter_mut().for_each(|v| *v = 2.0 / 255.0);
        // Two members 2 levels apart: population std 1 level everywhere.
        assert!((pixel_std_8bit(&[a, b]) - 1.0).abs() < 1e-5);
    }
}
