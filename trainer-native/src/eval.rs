//! `eval`: the quality table of bicubic, Lanczos, precomputed outputs of other upscalers (the
//! peers of `scripts/quality.sh`) and one or more weight files on evaluation images: PSNR-Y and
//! SSIM-Y, the weight-free perceptual metrics MS-SSIM, GMSD and HaarPSI, the standard NIQE and
//! BRISQUE (with the HR images' own as the naturalness reference), and optionally the GDPO
//! reward's detail terms; optionally side-by-side crops of every method.
//!
//! LR inputs come from (a) HR images downscaled with MATLAB-style antialiased bicubic (the SR
//! literature's convention) or degraded by the Real-ESRGAN pipeline with a fixed seed, or
//! (b) real LR/HR pairs matched by file name. Synthesised LR is rounded to 8 bits, as a saved
//! file is (`--save-lr` writes exactly it, for the upscalers that run outside this binary), so
//! every method sees the same LR. Metrics follow the conventions of `metrics` (BT.601 luma,
//! border crop; the full-reference perceptual metrics on the same border-cropped images). The
//! bicubic row is step 1 of the pipeline itself (`model::resample::bicubic_upsample`), so
//! "beats bicubic" means the network adds something over its own input; the Lanczos row is
//! the `image` crate's Lanczos3 resize of the 8-bit LR (what an image editor offers).

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
    /// `(name, folder)` per row of precomputed outputs (another upscaler's results on the
    /// LR that `save_lr` wrote), matched to the HR by file stem.
    pub precomputed: Vec<(String, PathBuf)>,
    /// The pipeline's options; `options.scale` is the evaluation scale.
    pub options: NaosdOptions,
    pub border: usize,
    /// Images to use at most (in sorted order).
    pub limit: Option<usize>,
    /// No-reference terms of the GDPO reward to report (and, when any is given, the full
    /// attribute-aware reward with the models' outputs of an image, and bicubic's as
    /// `reward_with_bicubic` says, pooled into one group; the other rows are not pooled).
    pub detail: DetailTerms,
    /// Pool bicubic's output with the models' for the reward. Off by default when there are
    /// two or more models: bicubic sits at an extreme of every term and would squeeze the
    /// models' normalised rewards together.
    pub reward_with_bicubic: bool,
    /// Report the standard NIQE and BRISQUE (models read from this folder, hash-checked),
    /// with a row for the HR images themselves.
    pub standard_iqa: Option<PathBuf>,
    /// Write every LR input here as `<stem>.png` (8-bit RGB) before evaluating.
    pub save_lr: Option<PathBuf>,
    /// Write side-by-side crops of every row here (`<stem>.png`, see [`crop_window`]).
    pub crops: Option<Crops>,
}

/// Side-by-side crops: per image, the same `side` x `side` window (HR pixels) of the HR and of
/// every method's output, left to right in the table's row order, 4 px white between.
#[derive(Debug, Clone)]
pub struct Crops {
    pub dir: PathBuf,
    pub side: usize,
}

/// Mean metrics of one method. `None`: not applicable (fidelity of the HR against itself, the
/// time of precomputed outputs), or not measurable on any image (MS-SSIM below 176 px).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub method: String,
    pub psnr_y: Option<f64>,
    pub ssim_y: Option<f64>,
    pub ms_ssim: Option<f64>,
    pub gmsd: Option<f64>,
    pub haarpsi: Option<f64>,
    /// Standard NIQE and BRISQUE (only with [`Eval::standard_iqa`]).
    pub niqe: Option<f64>,
    pub brisque: Option<f64>,
    /// Mean of each detail term (in [`Report::detail_names`] order).
    pub detail: Vec<f64>,
    /// Mean pooled attribute-aware reward (only with detail terms).
    pub reward: Option<f64>,
    pub seconds: Option<f64>,
}

/// The table `eval` prints.
#[derive(Debug, Clone)]
pub struct Report {
    pub images: usize,
    pub detail_names: Vec<String>,
    pub standard_iqa: bool,
    pub rows: Vec<Row>,
    /// What could not be measured (per metric: how many images), for the table's footnote.
    pub notes: Vec<String>,
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

impl Report {
    /// A Markdown table (arrows: which direction is better), then its footnotes.
    pub fn markdown(&self, title: &str) -> String {
        let with_reward = self.rows.iter().any(|r| r.reward.is_some());
        let mut head =
            "| method | PSNR-Y (dB) ↑ | SSIM-Y ↑ | MS-SSIM ↑ | GMSD ↓ | HaarPSI ↑ |".to_string();
        let mut rule = "|---|---:|---:|---:|---:|---:|".to_string();
        if self.standard_iqa {
            head.push_str(" NIQE ↓ | BRISQUE ↓ |");
            rule.push_str("---:|---:|");
        }
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
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                r.method,
                cell(r.psnr_y, 2),
                cell(r.ssim_y, 4),
                cell(r.ms_ssim, 4),
                cell(r.gmsd, 4),
                cell(r.haarpsi, 4)
            );
            if self.standard_iqa {
                let _ = write!(out, " {} | {} |", cell(r.niqe, 3), cell(r.brisque, 2));
            }
            for v in &r.detail {
                let _ = write!(out, " {v:.3} |");
            }
            if with_reward {
                let _ = write!(out, " {} |", cell(r.reward, 3));
            }
            let _ = writeln!(out, " {} |", cell(r.seconds, 1));
        }
        for note in &self.notes {
            let _ = writeln!(out, "\n{note}");
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

/// The image as its 8-bit file would hold it.
fn quantised(p: &Planar) -> Planar {
    Planar::from_rgb8(&p.to_rgb8())
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
    // Outputs, saved LR and crops are named by file stem: two HR images must not share one.
    let mut stems = std::collections::HashSet::new();
    for path in &hr_paths {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        ensure!(
            stems.insert(stem.to_string()),
            "two HR images are named {stem}.* under {} (rows are matched by file name)",
            hr_dir.display()
        );
    }
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
                LrSource::Bicubic => quantised(&downscale_antialiased(&hr, scale)),
                LrSource::Degraded { config, seed } => {
                    let mut rng = item_rng(*seed, 0, i as u64);
                    ensure!(
                        config.scale == scale,
                        "the degradation config is for x{}, not x{scale}",
                        config.scale
                    );
                    let params = degrade::sample(config, w, h, &mut rng);
                    quantised(&degrade::apply(&params, &hr)?)
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

/// The Lanczos3 resize of the `image` crate (the 8-bit LR, as an image editor would).
fn lanczos_upsample(lr: &Planar, scale: usize) -> Planar {
    let up = image::imageops::resize(
        &lr.to_rgb8(),
        (lr.width * scale) as u32,
        (lr.height * scale) as u32,
        image::imageops::FilterType::Lanczos3,
    );
    Planar::from_rgb8(&up)
}

/// Precomputed outputs in `dir`, one per HR image (by file stem), each exactly the HR's size.
fn load_outputs(
    name: &str,
    dir: &Path,
    pairs: &[(String, Planar, Planar)],
) -> anyhow::Result<Vec<Planar>> {
    let by_stem: HashMap<String, PathBuf> = list_images(dir)
        .with_context(|| format!("outputs of {name}"))?
        .into_iter()
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
        .collect();
    pairs
        .iter()
        .map(|(stem, hr, _)| {
            let path = by_stem.get(stem).with_context(|| {
                format!("{name}: no output named {stem}.* in {}", dir.display())
            })?;
            let sr = load_planar(path)?;
            ensure!(
                (sr.width, sr.height) == (hr.width, hr.height),
                "{name}: {} is {}x{}, the HR is {}x{}",
                path.display(),
                sr.width,
                sr.height,
                hr.width,
                hr.height
            );
            Ok(sr)
        })
        .collect()
}

/// The `side` x `side` window (clamped to the image) with the most luma gradient energy in
/// `hr`, on a grid of `side / 4`: where detail is, so that a crop shows what the methods do
/// with it rather than a patch of sky.
pub fn crop_window(hr: &Planar, side: usize) -> (usize, usize, usize) {
    let side = side.min(hr.width).min(hr.height);
    let y = crate::metrics::luma_bt601(hr);
    let w = hr.width;
    let energy = |x0: usize, y0: usize| -> f64 {
        let mut e = 0.0;
        for yy in y0..y0 + side - 1 {
            for xx in x0..x0 + side - 1 {
                let v = y[yy * w + xx];
                e += (y[yy * w + xx + 1] - v).abs() + (y[(yy + 1) * w + xx] - v).abs();
            }
        }
        e
    };
    let stride = (side / 4).max(1);
    let mut best = (0, 0, f64::MIN);
    for y0 in (0..=hr.height - side).step_by(stride) {
        for x0 in (0..=hr.width - side).step_by(stride) {
            let e = energy(x0, y0);
            if e > best.2 {
                best = (x0, y0, e);
            }
        }
    }
    (best.0, best.1, side)
}

fn write_crops(
    crops: &Crops,
    pairs: &[(String, Planar, Planar)],
    methods: &[Method],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&crops.dir)
        .with_context(|| format!("cannot create {}", crops.dir.display()))?;
    for (i, (stem, hr, _)) in pairs.iter().enumerate() {
        let (x0, y0, side) = crop_window(hr, crops.side);
        let mut gap = Planar::zeros(4, side);
        gap.data.iter_mut().for_each(|v| *v = 1.0);
        let mut parts = vec![hr.crop(x0, y0, side, side)];
        for m in methods.iter().filter(|m| !m.is_reference) {
            parts.push(gap.clone());
            parts.push(m.outputs[i].crop(x0, y0, side, side));
        }
        let strip = crate::image_io::hstack(&parts.iter().collect::<Vec<_>>());
        let path = crops.dir.join(format!("{stem}.png"));
        strip
            .to_rgb8()
            .save(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// One row's outputs.
struct Method {
    name: String,
    outputs: Vec<Planar>,
    seconds: Option<f64>,
    /// The HR images themselves: only their no-reference scores are reported.
    is_reference: bool,
    /// Scored in the pooled reward's groups.
    pooled: bool,
}

/// The mean of the measurable values, and how many images could not be measured.
fn mean_measured(values: impl Iterator<Item = anyhow::Result<f64>>) -> (Option<f64>, usize) {
    let (mut sum, mut n, mut failed) = (0.0, 0usize, 0usize);
    for v in values {
        match v {
            Ok(v) if v.is_finite() => {
                sum += v;
                n += 1;
            }
            _ => failed += 1,
        }
    }
    ((n > 0).then(|| sum / n as f64), failed)
}

impl BackendTask for Eval<'_> {
    type Output = Report;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Report> {
        let scale = self.options.scale;
        if scale == 0 {
            bail!("scale must be positive");
        }
        let pairs = eval_pairs(self.hr, &self.lr, scale, self.limit)?;
        if let Some(dir) = &self.save_lr {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for (stem, _, lr) in &pairs {
                let path = dir.join(format!("{stem}.png"));
                lr.to_rgb8()
                    .save(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        // Loaded before any model runs: a missing file fails in a second, not after an hour.
        let standard_iqa = match &self.standard_iqa {
            Some(dir) => Some((
                crate::iqa::Niqe::load(dir)?,
                crate::iqa::Brisque::load(dir)?,
            )),
            None => None,
        };
        let detail_terms = self.detail.build::<B>(&device)?;
        let detail_names: Vec<String> = detail_terms.iter().map(|t| t.name().to_string()).collect();
        let reward = (!detail_terms.is_empty()).then(|| Reward {
            mode: RewardMode::Full,
            fidelity: Box::new(PsnrY {
                border: self.border,
            }),
            detail: detail_terms,
        });

        // Every row's outputs: the HR (reference, with the standard metrics), bicubic (step 1
        // of the pipeline), Lanczos, the precomputed peers, then the models.
        let mut methods: Vec<Method> = Vec::new();
        if standard_iqa.is_some() {
            methods.push(Method {
                name: "HR (reference)".into(),
                outputs: pairs.iter().map(|p| p.1.clone()).collect(),
                seconds: None,
                is_reference: true,
                pooled: false,
            });
        }
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
        methods.push(Method {
            name: "bicubic".into(),
            outputs: bicubic,
            seconds: Some(started.elapsed().as_secs_f64()),
            is_reference: false,
            pooled: self.reward_with_bicubic || self.models.len() < 2,
        });
        let started = Instant::now();
        let lanczos = pairs
            .iter()
            .map(|(_, _, lr)| lanczos_upsample(lr, scale))
            .collect();
        methods.push(Method {
            name: "lanczos".into(),
            outputs: lanczos,
            seconds: Some(started.elapsed().as_secs_f64()),
            is_reference: false,
            pooled: false,
        });
        for (name, dir) in &self.precomputed {
            methods.push(Method {
                name: name.clone(),
                outputs: load_outputs(name, dir, &pairs)?,
                seconds: None,
                is_reference: false,
                pooled: false,
            });
        }

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
            methods.push(Method {
                name: name.clone(),
                outputs,
                seconds: Some(started.elapsed().as_secs_f64()),
                is_reference: false,
                pooled: true,
            });
        }
        if let Some(crops) = &self.crops {
            write_crops(crops, &pairs, &methods)?;
        }

        // Pooled reward: per image, one group of the pooled methods' outputs.
        let n = pairs.len() as f64;
        let pooled_idx: Vec<usize> = (0..methods.len())
            .filter(|&m| reward.is_some() && methods[m].pooled)
            .collect();
        let mut pooled: Vec<Option<f64>> = (0..methods.len())
            .map(|m| pooled_idx.contains(&m).then_some(0.0))
            .collect();
        if let Some(reward) = &reward {
            for (i, (_, hr, _)) in pairs.iter().enumerate() {
                let outputs: Vec<Vec<Planar>> = pooled_idx
                    .iter()
                    .map(|&m| vec![methods[m].outputs[i].clone()])
                    .collect();
                let ratios = attribute_ratios(hr, false);
                for (&m, r) in pooled_idx
                    .iter()
                    .zip(pooled_method_rewards(reward, hr, ratios, &outputs))
                {
                    pooled[m] = pooled[m].map(|s| s + r / n);
                }
            }
        }

        let border = self.border;
        let inner = |p: &Planar| {
            p.crop(
                border,
                border,
                p.width.saturating_sub(2 * border),
                p.height.saturating_sub(2 * border),
            )
        };
        let hrs: Vec<Planar> = pairs.iter().map(|p| p.1.clone()).collect();
        let hrs_inner: Vec<Planar> = hrs.iter().map(inner).collect();
        let mut notes = Vec::new();
        let mut rows = Vec::new();
        for (method, pooled) in methods.iter().zip(pooled) {
            let mut note = |metric: &str, (mean, failed): (Option<f64>, usize)| {
                if failed > 0 {
                    notes.push(format!(
                        "{}: {metric} not measurable on {failed} of {} images (mean of the rest)",
                        method.name,
                        pairs.len()
                    ));
                }
                mean
            };
            let outs_inner: Vec<Planar> = method.outputs.iter().map(inner).collect();
            let full_reference = |f: fn(&Planar, &Planar) -> anyhow::Result<f64>| {
                mean_measured(hrs_inner.iter().zip(&outs_inner).map(|(h, o)| f(h, o)))
            };
            let fidelity = !method.is_reference;
            let (niqe, brisque) = match &standard_iqa {
                Some((niqe, brisque)) => (
                    note(
                        "NIQE",
                        mean_measured(method.outputs.iter().map(|o| niqe.score(o))),
                    ),
                    note(
                        "BRISQUE",
                        mean_measured(method.outputs.iter().map(|o| brisque.score(o))),
                    ),
                ),
                None => (None, None),
            };
            let row = Row {
                method: method.name.clone(),
                psnr_y: fidelity.then(|| {
                    hrs.iter()
                        .zip(&method.outputs)
                        .map(|(hr, sr)| psnr_y(sr, hr, border))
                        .sum::<f64>()
                        / n
                }),
                ssim_y: fidelity.then(|| {
                    hrs.iter()
                        .zip(&method.outputs)
                        .map(|(hr, sr)| ssim_y(sr, hr, border))
                        .sum::<f64>()
                        / n
                }),
                ms_ssim: if fidelity {
                    note("MS-SSIM", full_reference(crate::iqa::ms_ssim))
                } else {
                    None
                },
                gmsd: if fidelity {
                    note("GMSD", full_reference(crate::iqa::gmsd))
                } else {
                    None
                },
                haarpsi: if fidelity {
                    note("HaarPSI", full_reference(crate::iqa::haarpsi))
                } else {
                    None
                },
                niqe,
                brisque,
                detail: reward.as_ref().map_or_else(Vec::new, |r| {
                    r.detail
                        .iter()
                        .map(|t| t.score(&method.outputs, &hrs).iter().sum::<f64>() / n)
                        .collect()
                }),
                reward: pooled,
                seconds: method.seconds,
            };
            rows.push(row);
        }
        Ok(Report {
            images: pairs.len(),
            detail_names,
            standard_iqa: standard_iqa.is_some(),
            rows,
            notes,
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
