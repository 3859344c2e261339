//! `eval`: PSNR-Y / SSIM-Y of bicubic and of one or more weight files on evaluation images.
//!
//! LR inputs come from (a) HR images downscaled with MATLAB-style antialiased bicubic (the SR
//! literature's convention) or degraded by the Real-ESRGAN pipeline with a fixed seed, or
//! (b) real LR/HR pairs matched by file name. Every method sees the same LR; metrics follow
//! the conventions of `metrics` (BT.601 luma, border crop). The bicubic row is step 1 of the
//! pipeline itself (`model::resample::bicubic_upsample`), so "beats bicubic" means the
//! network adds something over its own input.

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, bail, ensure};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use model::{
    HostImage, NaosdOptions, TileOptions,
    resample::{bicubic_upsample, cubic_weight},
    upscale_tiled,
};

use crate::{
    backend::BackendTask,
    data::{item_rng, list_images},
    degrade::{self, DegradationConfig},
    export::read_weights,
    metrics::{psnr_y, ssim_y},
    planar::Planar,
    reward::{DetailTerms, PsnrY, Reward, RewardMode, attribute_ratios, pooled_method_rewards},
    upscale::NATIVE_BUFFER_BUDGET,
};

/// Where the LR inputs come from.
#[derive(Debug, Clone)]
pub enum LrSource {
    /// Antialiased bicubic downscaling of the HR (MATLAB `imresize` style, a = -0.5).
    Bicubic,
    /// The Real-ESRGAN degradation (`config`), seeded per image from `seed`.
    Degraded {
        config: Box<DegradationConfig>,
        seed: u64,
    },
    /// Real LR images in this folder, paired with the HR by file stem.
    Folder(PathBuf),
}

/// One evaluation run.
pub struct Eval<'a> {
    pub hr: &'a Path,
    pub lr: LrSource,
    /// `(name, weight file)` per model row.
    pub models: Vec<(String, PathBuf)>,
    /// The pipeline's options; `options.scale` is the evaluation scale.
    pub options: NaosdOptions,
    pub border: usize,
    /// Images to use at most (in sorted order).
    pub limit: Option<usize>,
    /// No-reference terms of the GDPO reward to report (and, when any is given, the full
    /// attribute-aware reward with all methods' outputs of an image pooled into one group).
    pub detail: DetailTerms,
    /// Pool bicubic's output with the models' for the reward. Off by default when there are
    /// two or more models: bicubic sits at an extreme of every term and would squeeze the
    /// models' normalised rewards together.
    pub reward_with_bicubic: bool,
}

/// Mean metrics of one method.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub method: String,
    pub psnr_y: f64,
    pub ssim_y: f64,
    /// Mean of each detail term (in [`Report::detail_names`] order).
    pub detail: Vec<f64>,
    /// Mean pooled attribute-aware reward (only with detail terms).
    pub reward: Option<f64>,
    pub seconds: f64,
}

/// The table `eval` prints.
#[derive(Debug, Clone)]
pub struct Report {
    pub images: usize,
    pub detail_names: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    /// A Markdown table.
    pub fn markdown(&self, title: &str) -> String {
        let with_reward = self.rows.iter().any(|r| r.reward.is_some());
        let mut head = "| method | PSNR-Y (dB) | SSIM-Y |".to_string();
        let mut rule = "|---|---:|---:|".to_string();
        for name in &self.detail_names {
            let _ = write!(head, " {name} |");
            rule.push_str("---:|");
        }
        if with_reward {
            head.push_str(" ARF reward (pooled) |");
            rule.push_str("---:|");
        }
        head.push_str(" time (s) |");
        rule.push_str("---:|");
        let mut out = format!("{title} ({} images)\n\n{head}\n{rule}\n", self.images);
        for r in &self.rows {
            let _ = write!(out, "| {} | {:.2} | {:.4} |", r.method, r.psnr_y, r.ssim_y);
            for v in &r.detail {
                let _ = write!(out, " {v:.3} |");
            }
            if with_reward {
                match r.reward {
                    Some(v) => {
                        let _ = write!(out, " {v:.3} |");
                    }
                    None => out.push_str(" - |"),
                }
            }
            let _ = writeln!(out, " {:.1} |", r.seconds);
        }
        out
    }
}

/// MATLAB-style antialiased bicubic downscaling by an integer factor: the cubic kernel
/// (a = -0.5) stretched by the factor, edge-clamped.
pub fn downscale_antialiased(img: &Planar, factor: usize) -> Planar {
    let taps = |len_in: usize| -> Vec<Vec<(usize, f32)>> {
        let len_out = len_in / factor;
        let f = factor as f64;
        (0..len_out)
            .map(|i| {
                let centre = (i as f64 + 0.5) * f - 0.5;
                let lo = (centre - 2.0 * f).floor() as isize;
                let hi = (centre + 2.0 * f).ceil() as isize;
                let mut w: Vec<(usize, f64)> = (lo..=hi)
                    .map(|j| {
                        let idx = j.clamp(0, len_in as isize - 1) as usize;
                        (idx, cubic_weight((centre - j as f64) / f))
                    })
                    .filter(|&(_, w)| w != 0.0)
                    .collect();
                let sum: f64 = w.iter().map(|p| p.1).sum();
                w.iter_mut().for_each(|p| p.1 /= sum);
                w.into_iter().map(|(i, v)| (i, v as f32)).collect()
            })
            .collect()
    };
    let (w, h) = (img.width, img.height);
    let (xt, yt) = (taps(w), taps(h));
    let (ow, oh) = (xt.len(), yt.len());
    let mut out = Planar::zeros(ow, oh);
    for c in 0..3 {
        let plane = img.plane(c);
        let mut wide = vec![0.0f32; h * ow];
        for y in 0..h {
            for (x, t) in xt.iter().enumerate() {
                wide[y * ow + x] = t.iter().map(|&(s, k)| k * plane[y * w + s]).sum();
            }
        }
        for (y, t) in yt.iter().enumerate() {
            for x in 0..ow {
                let v: f32 = t.iter().map(|&(s, k)| k * wide[s * ow + x]).sum();
                *out.get_mut(c, x, y) = v.clamp(0.0, 1.0);
            }
        }
    }
    out
}

fn planar_to_host(p: &Planar) -> HostImage {
    HostImage {
        channels: 3,
        height: p.height,
        width: p.width,
        data: p.data.iter().map(|v| v * 2.0 - 1.0).collect(),
    }
}

fn host_to_planar(h: &HostImage) -> Planar {
    Planar {
        width: h.width,
        height: h.height,
        data: h.to_unit_range(),
    }
}

fn load_planar(path: &Path) -> anyhow::Result<Planar> {
    Ok(Planar::from_rgb8(&crate::image_io::decode_rgb8(path)?))
}

/// `(HR, LR)` pairs of the evaluation set, HR cropped to a multiple of the scale.
pub fn eval_pairs(
    hr_dir: &Path,
    lr: &LrSource,
    scale: usize,
    limit: Option<usize>,
) -> anyhow::Result<Vec<(String, Planar, Planar)>> {
    let mut hr_paths = list_images(hr_dir)?;
    hr_paths.sort();
    if let Some(n) = limit {
        hr_paths.truncate(n);
    }
    ensure!(!hr_paths.is_empty(), "no images in {}", hr_dir.display());
    let lr_by_stem: HashMap<String, PathBuf> = match lr {
        LrSource::Folder(dir) => list_images(dir)?
            .into_iter()
            .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
            .collect(),
        _ => HashMap::new(),
    };
    hr_paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("?")
                .to_string();
            let hr = load_planar(path)?;
            let (w, h) = (hr.width / scale * scale, hr.height / scale * scale);
            ensure!(
                w > 0 && h > 0,
                "{} is smaller than the scale",
                path.display()
            );
            let hr = hr.crop(0, 0, w, h);
            let lr = match lr {
                LrSource::Bicubic => downscale_antialiased(&hr, scale),
                LrSource::Degraded { config, seed } => {
                    let mut rng = item_rng(*seed, 0, i as u64);
                    ensure!(
                        config.scale == scale,
                        "the degradation config is for x{}, not x{scale}",
                        config.scale
                    );
                    let params = degrade::sample(config, w, h, &mut rng);
                    degrade::apply(&params, &hr)?
                }
                LrSource::Folder(_) => {
                    let p = lr_by_stem.get(&name).with_context(|| {
                        format!("no LR image named {name}.* for {}", path.display())
                    })?;
                    let lr = load_planar(p)?;
                    ensure!(
                        lr.width * scale == w && lr.height * scale == h,
                        "{}: LR {}x{} does not match HR {w}x{h} at x{scale}",
                        p.display(),
                        lr.width,
                        lr.height
                    );
                    lr
                }
            };
            Ok((name, hr, lr))
        })
        .collect()
}

impl BackendTask for Eval<'_> {
    type Output = Report;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Report> {
        let scale = self.options.scale;
        if scale == 0 {
            bail!("scale must be positive");
        }
        let pairs = eval_pairs(self.hr, &self.lr, scale, self.limit)?;
        let detail_terms = self.detail.build::<B>(&device)?;
        let detail_names: Vec<String> = detail_terms.iter().map(|t| t.name().to_string()).collect();
        let reward = (!detail_terms.is_empty()).then(|| Reward {
            mode: RewardMode::Full,
            fidelity: Box::new(PsnrY {
                border: self.border,
            }),
            detail: detail_terms,
        });

        // Every method's outputs, bicubic (step 1 of the pipeline) first.
        let mut methods: Vec<(String, Vec<Planar>, f64)> = Vec::new();
        let started = Instant::now();
        let bicubic: Vec<Planar> = pairs
            .iter()
            .map(|(_, _, lr)| {
                let host = planar_to_host(lr);
                let t = Tensor::<B, 4>::from_data(
                    TensorData::new(host.data, [1, 3, lr.height, lr.width]),
                    &device,
                );
                let up = bicubic_upsample(t, scale).clamp(-1.0, 1.0);
                let [_, c, h, w] = up.dims();
                let data = up
                    .into_data()
                    .to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                Ok(host_to_planar(&HostImage::new(c, h, w, data)?))
            })
            .collect::<anyhow::Result<_>>()?;
        methods.push(("bicubic".into(), bicubic, started.elapsed().as_secs_f64()));

        let options = &self.options;
        for (name, path) in &self.models {
            let model = read_weights::<B>(path, &device)?;
            let tiles = TileOptions::for_device(model.config(), scale, NATIVE_BUFFER_BUDGET);
            let started = Instant::now();
            let outputs: Vec<Planar> = pairs
                .iter()
                .map(|(img, _, lr)| {
                    let sr = upscale_tiled(
                        &model,
                        &planar_to_host(lr),
                        options,
                        tiles,
                        &device,
                        |_, _| {},
                    )
                    .with_context(|| format!("{name} on {img}"))?;
                    Ok(host_to_planar(&sr))
                })
                .collect::<anyhow::Result<_>>()?;
            methods.push((name.clone(), outputs, started.elapsed().as_secs_f64()));
        }

        // Pooled reward: per image, one group of the pooled methods' outputs.
        let n = pairs.len() as f64;
        let first_pooled = usize::from(!self.reward_with_bicubic && methods.len() > 2);
        let mut pooled: Vec<Option<f64>> = (0..methods.len())
            .map(|m| (reward.is_some() && m >= first_pooled).then_some(0.0))
            .collect();
        if let Some(reward) = &reward {
            for (i, (_, hr, _)) in pairs.iter().enumerate() {
                let outputs: Vec<Vec<Planar>> = methods[first_pooled..]
                    .iter()
                    .map(|m| vec![m.1[i].clone()])
                    .collect();
                let ratios = attribute_ratios(hr, false);
                for (sum, r) in pooled[first_pooled..]
                    .iter_mut()
                    .zip(pooled_method_rewards(reward, hr, ratios, &outputs))
                {
                    *sum = sum.map(|s| s + r / n);
                }
            }
        }
        let hrs: Vec<Planar> = pairs.iter().map(|p| p.1.clone()).collect();
        let rows = methods
            .into_iter()
            .zip(pooled)
            .map(|((method, outputs, seconds), pooled)| {
                let (psnr, ssim) =
                    pairs
                        .iter()
                        .zip(&outputs)
                        .fold((0.0, 0.0), |(p, s), ((_, hr, _), sr)| {
                            (
                                p + psnr_y(sr, hr, self.border),
                                s + ssim_y(sr, hr, self.border),
                            )
                        });
                let detail = reward.as_ref().map_or_else(Vec::new, |r| {
                    r.detail
                        .iter()
                        .map(|t| t.score(&outputs, &hrs).iter().sum::<f64>() / n)
                        .collect()
                });
                Row {
                    method,
                    psnr_y: psnr / n,
                    ssim_y: ssim / n,
                    detail,
                    reward: pooled,
                    seconds,
                }
            })
            .collect();
        Ok(Report {
            images: pairs.len(),
            detail_names,
            rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn antialiased_downscale_keeps_flat_images_flat_and_averages_stripes() {
        let mut flat = Planar::zeros(16, 12);
        flat.data.iter_mut().for_each(|v| *v = 0.3);
        let small = downscale_antialiased(&flat, 4);
        assert_eq!((small.width, small.height), (4, 3));
        assert!(small.data.iter().all(|v| (v - 0.3).abs() < 1e-6));
        // One-pixel stripes alias without a prefilter; antialiased, they average to grey.
        let mut stripes = Planar::zeros(32, 32);
        for y in 0..32 {
            for x in 0..32 {
                for c in 0..3 {
                    *stripes.get_mut(c, x, y) = (x % 2) as f32;
                }
            }
        }
        let small = downscale_antialiased(&stripes, 4);
        // Away from the clamped borders (the kernel spans 16 source pixels).
        for y in 0..small.height {
            for x in 2..small.width - 2 {
                let v = small.get(0, x, y);
                assert!((v - 0.5).abs() < 0.05, "({x}, {y}): {v}");
            }
        }
    }
}
