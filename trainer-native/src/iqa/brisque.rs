//! BRISQUE, the Blind/Referenceless Image Spatial Quality Evaluator (Mittal, Moorthy and
//! Bovik, "No-Reference Image Quality Assessment in the Spatial Domain", IEEE TIP 2012), as
//! OpenCV contrib's `cv::quality::QualityBRISQUE` computes it with its LIVE-trained SVR.
//!
//! Features (36): OpenCV's 8-bit grey ([`super::gray_opencv`]) scaled to [0, 1] in f32; at the
//! full and the half scale (`cv::resize` bicubic, [`super::resample::opencv_cubic`]) the MSCN
//! image `(I - mu) / (sqrt(E[I^2] - mu^2) + 1/255)` with OpenCV's 7x7 Gaussian (sigma 7/6,
//! replicated borders), then an AGGD fit of it (shape, mean variance) and of its products with
//! the neighbour to the right, below, below-right and above-right (zero outside the image;
//! shape, mean, left and right variance). Every step runs in f32 in OpenCV's order of
//! operations (the Gaussian's fused multiply-adds included), so the features are OpenCV's bit
//! for bit where it runs its portable code; with Intel IPP (the PyPI wheels' default) only its
//! resize rounds differently, which matters only on exactly flat areas (docs/quality.md).
//!
//! Score: the features scaled to [-1, 1] with the range file, then the epsilon-SVR
//! `sum_i alpha_i exp(-gamma |x - sv_i|^2) - rho`, clamped to [0, 100] as OpenCV does
//! ([`Brisque::score`]; [`Brisque::raw_score`] is unclamped). Lower is better.

use std::{path::Path, sync::OnceLock};

use anyhow::{Context, anyhow, bail, ensure};
use serde_yaml_ng::Value as Yaml;

use super::{BRISQUE_MODEL, BRISQUE_RANGE, gray_opencv, resample::opencv_cubic, shape_ratio};
use crate::planar::Planar;

/// Features per image: 18 per scale.
pub const BRISQUE_FEATURES: usize = 36;

/// The LIVE-trained BRISQUE regressor and its feature ranges.
#[derive(Debug, Clone, PartialEq)]
pub struct Brisque {
    gamma: f64,
    rho: f64,
    alpha: Vec<f64>,
    /// Row-major `alpha.len() x 36`, f32 as OpenCV holds them.
    support_vectors: Vec<f32>,
    range_min: [f32; BRISQUE_FEATURES],
    range_max: [f32; BRISQUE_FEATURES],
}

/// `a * b + c` with one rounding (the FMA of OpenCV's SIMD filters). The f64 product of two
/// f32 is exact; the sum's double rounding differs from a true FMA only on exact f32 ties.
fn fma(a: f32, b: f32, c: f32) -> f32 {
    (f64::from(a) * f64::from(b) + f64::from(c)) as f32
}

/// OpenCV's `getGaussianKernel(7, 7/6, CV_32F)`.
fn gaussian_kernel() -> [f32; 7] {
    let sigma = 7.0f64 / 6.0;
    let scale = -0.5 / (sigma * sigma);
    let raw: Vec<f64> = (0..7)
        .map(|i| {
            let x = i as f64 - 3.0;
            (scale * x * x).exp()
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    core::array::from_fn(|i| (raw[i] / sum) as f32)
}

/// OpenCV's `GaussianBlur(7x7, sigma 7/6, BORDER_REPLICATE)` of an f32 plane: the row filter
/// accumulates the 7 taps left to right by FMA, the (symmetric) column filter starts at the
/// centre tap and adds the pairs `above + below` by FMA.
fn gaussian_blur(src: &[f32], w: usize, h: usize) -> Vec<f32> {
    let k = gaussian_kernel();
    let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    let mut rows = vec![0.0f32; w * h];
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        for x in 0..w {
            let mut s = 0.0f32;
            for (t, &kt) in k.iter().enumerate() {
                s = fma(row[clamp(x as isize + t as isize - 3, w)], kt, s);
            }
            rows[y * w + x] = s;
        }
    }
    let mut out = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let at = |dy: isize| rows[clamp(y as isize + dy, h) * w + x];
            let mut s = fma(at(0), k[3], 0.0);
            for d in 1..=3isize {
                s = fma(at(-d) + at(d), k[(3 - d) as usize], s);
            }
            out[y * w + x] = s;
        }
    }
    out
}

/// The shapes 0.2, 0.201, ... (< 10, accumulated in f64 as OpenCV's loop does) and their
/// moment ratios.
fn shape_grid() -> &'static [(f64, f64)] {
    static GRID: OnceLock<Vec<(f64, f64)>> = OnceLock::new();
    GRID.get_or_init(|| {
        let mut grid = Vec::with_capacity(9800);
        let mut a = 0.2f64;
        while a < 10.0 {
            grid.push((a, shape_ratio(a)));
            a += 0.001;
        }
        grid
    })
}

/// OpenCV's `AGGDfit`: `(shape, left std, right std)`. NaN samples (from the square root of a
/// negative rounding residue in flat areas) count in the total only, as in OpenCV; the shape
/// search walks the grid until the mismatch grows.
fn aggd(values: &[f32]) -> (f64, f64, f64) {
    let (mut nl, mut nr) = (0usize, 0usize);
    let (mut sl, mut sr, mut sa) = (0.0f64, 0.0f64, 0.0f64);
    for &v in values {
        let v = f64::from(v);
        if v > 0.0 {
            nr += 1;
            sr += v * v;
            sa += v;
        } else if v < 0.0 {
            nl += 1;
            sl += v * v;
            sa -= v;
        }
    }
    let left = (sl / nl as f64).sqrt();
    let right = (sr / nr as f64).sqrt();
    let g = left / right;
    let n = values.len() as f64;
    let r = (sa / n).powf(2.0) / ((sl + sr) / n);
    let r_norm = r * (g.powf(3.0) + 1.0) * (g + 1.0) / (g.powf(2.0) + 1.0).powf(2.0);
    let (mut best, mut prev) = (0.0, 1e10);
    for &(a, ratio) in shape_grid() {
        let diff = (ratio - r_norm).abs();
        if diff > prev {
            break;
        }
        prev = diff;
        best = a;
    }
    (best, left, right)
}

/// MSCN coefficients (OpenCV's `structdis`) of an f32 plane in [0, 1].
fn mscn(x: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mu = gaussian_blur(x, w, h);
    let squares: Vec<f32> = x.iter().map(|v| v * v).collect();
    let second = gaussian_blur(&squares, w, h);
    let offset = (1.0f64 / 255.0) as f32;
    (0..w * h)
        .map(|i| {
            let sigma = (second[i] - mu[i] * mu[i]).sqrt() + offset;
            (x[i] - mu[i]) / sigma
        })
        .collect()
}

/// The 36 BRISQUE features of an image, OpenCV's `QualityBRISQUE::computeFeatures`.
///
/// # Errors
/// When the image is smaller than 2x2 (no half scale).
pub(crate) fn features(img: &Planar) -> anyhow::Result<[f32; BRISQUE_FEATURES]> {
    let (w, h) = (img.width, img.height);
    ensure!(
        w >= 2 && h >= 2,
        "BRISQUE needs at least 2x2 pixels, got {w}x{h}"
    );
    let scale = (1.0f64 / 255.0) as f32;
    let full: Vec<f32> = gray_opencv(img)
        .into_iter()
        .map(|g| f32::from(g) * scale)
        .collect();
    let mut out = [0.0f32; BRISQUE_FEATURES];
    let mut next = 0;
    let mut push = |v: f64| {
        out[next] = v as f32;
        next += 1;
    };
    for level in 0..2 {
        let (sw, sh) = (w >> level, h >> level);
        let plane = opencv_cubic(&full, w, h, sw, sh);
        let s = mscn(&plane, sw, sh);
        let (shape, l, r) = aggd(&s);
        push(shape);
        push(f64::from((l * l + r * r) as f32) / 2.0);
        for (dy, dx) in [(0isize, 1isize), (1, 0), (1, 1), (-1, 1)] {
            let products: Vec<f32> = (0..sw * sh)
                .map(|i| {
                    let (y, x) = ((i / sw) as isize, (i % sw) as isize);
                    let (ny, nx) = (y + dy, x + dx);
                    let neighbour =
                        if (0..sh as isize).contains(&ny) && (0..sw as isize).contains(&nx) {
                            s[ny as usize * sw + nx as usize]
                        } else {
                            0.0
                        };
                    s[i] * neighbour
                })
                .collect();
            let (shape, l, r) = aggd(&products);
            let g1 = libm::tgamma(1.0 / shape);
            let constant = g1.sqrt() / libm::tgamma(3.0 / shape).sqrt();
            let mean = (r - l) * (libm::tgamma(2.0 / shape) / g1) * constant;
            push(shape);
            push(mean);
            push(l.powf(2.0));
            push(r.powf(2.0));
        }
    }
    Ok(out)
}

/// The OpenCV FileStorage YAML as a document: its `%YAML:1.0` directive is not YAML (the
/// colon), so that line is dropped; the `!!opencv-matrix` tags are looked through.
fn parse_yaml(text: &str, what: &str) -> anyhow::Result<Yaml> {
    let body = match text.strip_prefix("%YAML") {
        Some(rest) => rest.split_once('\n').map_or("", |(_, tail)| tail),
        None => text,
    };
    serde_yaml_ng::from_str(body).with_context(|| format!("{what}: bad YAML"))
}

/// `doc[k0][k1]...`, or an error naming the path.
fn field<'a>(doc: &'a Yaml, path: &[&str]) -> anyhow::Result<&'a Yaml> {
    let mut node = doc;
    for (i, key) in path.iter().enumerate() {
        node = node
            .get(key)
            .ok_or_else(|| anyhow!("{} missing", path[..=i].join(".")))?;
    }
    Ok(node)
}

fn number(y: &Yaml) -> Option<f64> {
    y.as_f64()
        .or_else(|| y.as_str().and_then(|s| s.trim().parse().ok()))
}

fn number_at(doc: &Yaml, path: &[&str]) -> anyhow::Result<f64> {
    number(field(doc, path)?).ok_or_else(|| anyhow!("{} is not a number", path.join(".")))
}

fn numbers(y: &Yaml, what: &str) -> anyhow::Result<Vec<f64>> {
    y.as_sequence()
        .ok_or_else(|| anyhow!("{what} is not a list"))?
        .iter()
        .map(|v| number(v).ok_or_else(|| anyhow!("{what} holds a non-number")))
        .collect()
}

impl Brisque {
    /// Loads `brisque_model_live.yml` and `brisque_range_live.yml` from `dir` (usually
    /// [`super::DEFAULT_DIR`]), checking their SHA-256.
    ///
    /// # Errors
    /// When a file is missing (the message names the path and the expected hash), differs
    /// from the standard model or is malformed.
    pub fn load(dir: impl AsRef<Path>) -> anyhow::Result<Self> {
        let dir = dir.as_ref();
        let model = BRISQUE_MODEL.read(dir)?;
        let range = BRISQUE_RANGE.read(dir)?;
        let text = |b: Vec<u8>, f: &crate::third_party::ThirdPartyFile| {
            String::from_utf8(b).with_context(|| format!("{} is not UTF-8", f.path(dir).display()))
        };
        Self::from_yaml(&text(model, &BRISQUE_MODEL)?, &text(range, &BRISQUE_RANGE)?)
            .with_context(|| format!("reading the BRISQUE model in {}", dir.display()))
    }

    /// The model from the text of OpenCV's SVM file (`opencv_ml_svm`: EPS_SVR, RBF kernel) and
    /// its range file (`range`: 2x36, minima then maxima). No hash check ([`Brisque::load`]
    /// does it).
    ///
    /// # Errors
    /// When a field is missing or inconsistent.
    pub fn from_yaml(model: &str, range: &str) -> anyhow::Result<Self> {
        let doc = parse_yaml(model, "BRISQUE model")?;
        let svm = field(&doc, &["opencv_ml_svm"])?;
        let text = |path: &[&str]| -> anyhow::Result<String> {
            Ok(field(svm, path)?.as_str().unwrap_or_default().to_string())
        };
        ensure!(
            text(&["svmType"])? == "EPS_SVR",
            "not an epsilon-SVR model (svmType {:?})",
            text(&["svmType"])?
        );
        ensure!(text(&["kernel", "type"])? == "RBF", "not an RBF kernel");
        let gamma = number_at(svm, &["kernel", "gamma"])?;
        ensure!(
            number_at(svm, &["var_count"])? == BRISQUE_FEATURES as f64,
            "the SVM does not take {BRISQUE_FEATURES} features"
        );
        let vectors = field(svm, &["support_vectors"])?
            .as_sequence()
            .context("support_vectors is not a list")?;
        let mut support_vectors = Vec::with_capacity(vectors.len() * BRISQUE_FEATURES);
        for v in vectors {
            let v = numbers(v, "a support vector")?;
            ensure!(
                v.len() == BRISQUE_FEATURES,
                "a support vector of {} values",
                v.len()
            );
            support_vectors.extend(v.into_iter().map(|x| x as f32));
        }
        let functions = field(svm, &["decision_functions"])?
            .as_sequence()
            .context("decision_functions is not a list")?;
        ensure!(
            functions.len() == 1,
            "a regression SVM has one decision function"
        );
        let df = &functions[0];
        let rho = number_at(df, &["rho"])?;
        let alpha = numbers(field(df, &["alpha"])?, "alpha")?;
        ensure!(
            alpha.len() == vectors.len(),
            "{} weights for {} support vectors",
            alpha.len(),
            vectors.len()
        );
        ensure!(
            df.get("index").is_none(),
            "decision functions over a subset of the support vectors are not supported"
        );
        let range_doc = parse_yaml(range, "BRISQUE range")?;
        let data = numbers(field(&range_doc, &["range", "data"])?, "range data")?;
        ensure!(
            data.len() == 2 * BRISQUE_FEATURES,
            "range of {} values",
            data.len()
        );
        let range_min = core::array::from_fn(|i| data[i] as f32);
        let range_max = core::array::from_fn(|i| data[BRISQUE_FEATURES + i] as f32);
        let all_finite = support_vectors.iter().all(|v| v.is_finite())
            && alpha.iter().chain([&gamma, &rho]).all(|v| v.is_finite());
        ensure!(all_finite, "the BRISQUE model holds non-finite values");
        Ok(Self {
            gamma,
            rho,
            alpha,
            support_vectors,
            range_min,
            range_max,
        })
    }

    /// The 36 features of an image (no model needed), as OpenCV's `computeFeatures`.
    ///
    /// # Errors
    /// When the image is smaller than 2x2.
    pub fn features(img: &Planar) -> anyhow::Result<[f32; BRISQUE_FEATURES]> {
        features(img)
    }

    /// The SVR's prediction for a feature vector, unclamped.
    pub fn predict(&self, features: &[f32; BRISQUE_FEATURES]) -> f64 {
        let x: [f32; BRISQUE_FEATURES] = core::array::from_fn(|i| {
            let (lo, hi) = (self.range_min[i], self.range_max[i]);
            -1.0 + 2.0 * (features[i] - lo) / (hi - lo)
        });
        let mut sum = -self.rho;
        for (sv, alpha) in self
            .support_vectors
            .chunks_exact(BRISQUE_FEATURES)
            .zip(&self.alpha)
        {
            // OpenCV's calc_rbf: f32 differences, squares summed in pairs in f64, the
            // exponent and the kernel value in f32.
            let mut d2 = 0.0f64;
            for (pair_sv, pair_x) in sv.chunks_exact(2).zip(x.chunks_exact(2)) {
                let t0 = f64::from(pair_sv[0] - pair_x[0]);
                let t1 = f64::from(pair_sv[1] - pair_x[1]);
                d2 += t0 * t0 + t1 * t1;
            }
            let exponent = (d2 * -self.gamma) as f32;
            let kernel = f64::from(exponent).exp() as f32;
            sum += f64::from(kernel) * alpha;
        }
        f64::from(sum as f32)
    }

    /// The SVR output, unclamped (below 0 for images better than the training set's best,
    /// above 100 beyond its worst): the informative value for ranking.
    ///
    /// # Errors
    /// When the image is smaller than 2x2 or flat (no texture: OpenCV returns NaN).
    pub fn raw_score(&self, img: &Planar) -> anyhow::Result<f64> {
        let f = features(img)?;
        if f.iter().any(|v| !v.is_finite()) {
            bail!(
                "BRISQUE: the {}x{} image has no texture (flat), no finite score",
                img.width,
                img.height
            );
        }
        let s = self.predict(&f);
        ensure!(s.is_finite(), "BRISQUE prediction is not finite");
        Ok(s)
    }

    /// BRISQUE of an RGB image in [0, 1] (scored as its 8-bit version): OpenCV's
    /// `QualityBRISQUE::compute`, clamped to [0, 100], lower is better.
    ///
    /// # Errors
    /// As [`Brisque::raw_score`].
    pub fn score(&self, img: &Planar) -> anyhow::Result<f64> {
        Ok(self.raw_score(img)?.clamp(0.0, 100.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_opencvs() {
        let bits = gaussian_kernel().map(f32::to_bits);
        assert_eq!(
            bits,
            [
                0x3c4dc94d, 0x3da1708e, 0x3e72fdbe, 0x3eaf6d66, 0x3e72fdbe, 0x3da1708e, 0x3c4dc94d
            ]
        );
    }

    #[test]
    fn blur_keeps_constants_close_and_smooths() {
        let (w, h) = (9, 5);
        let flat = vec![0.25f32; w * h];
        let out = gaussian_blur(&flat, w, h);
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-7));
        let mut impulse = vec![0.0f32; 81];
        impulse[40] = 1.0;
        let out = gaussian_blur(&impulse, 9, 9);
        let k = gaussian_kernel();
        assert!((out[40] - k[3] * k[3]).abs() < 1e-7);
        assert!((out[40 + 9 + 1] - k[4] * k[4]).abs() < 1e-7);
        let total: f32 = out.iter().sum();
        assert!((total - 1.0).abs() < 1e-5);
    }

    #[test]
    fn tiny_and_flat_images_are_errors_not_nan() {
        let err = features(&Planar::zeros(1, 5)).unwrap_err();
        assert!(err.to_string().contains("at least 2x2"), "{err}");
        let f = features(&Planar {
            width: 32,
            height: 32,
            data: vec![0.5; 3 * 32 * 32],
        })
        .unwrap();
        // A flat image has no negative (or no positive) MSCN values: NaN scales.
        assert!(f.iter().any(|v| v.is_nan()));
    }
}
