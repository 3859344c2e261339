//! The two downscalers the reference implementations use for their second scale, reproduced
//! exactly: MATLAB's antialiased bicubic `imresize` (NIQE, f64) and OpenCV's `INTER_CUBIC`
//! `resize` of single-precision images (BRISQUE, f32 with OpenCV's order of operations).

/// Keys' cubic with a = -0.5 (MATLAB's `imresize` kernel).
fn keys(x: f64) -> f64 {
    let a = x.abs();
    if a <= 1.0 {
        (1.5 * a - 2.5) * a * a + 1.0
    } else if a <= 2.0 {
        ((-0.5 * a + 2.5) * a - 4.0) * a + 2.0
    } else {
        0.0
    }
}

/// MATLAB's 'symmetric' border (the edge sample repeated): index `j` of an axis of `n`.
fn mirror(j: i64, n: usize) -> usize {
    let n = n as i64;
    let mut j = j;
    while j < 0 || j >= n {
        j = if j < 0 { -j - 1 } else { 2 * n - 1 - j };
    }
    j as usize
}

/// The taps `(source index, weight)` of every output sample of MATLAB's
/// `imresize(_, scale, 'bicubic')` along an axis of `n` samples (antialiased when shrinking:
/// the kernel is stretched by `1 / scale`; weights normalised to sum 1).
fn matlab_taps(n: usize, scale: f64) -> Vec<Vec<(usize, f64)>> {
    let m = (n as f64 * scale).ceil() as usize;
    let (support, stretch) = if scale < 1.0 {
        (4.0 / scale, scale)
    } else {
        (4.0, 1.0)
    };
    let count = support.ceil() as i64 + 2;
    (0..m)
        .map(|i| {
            // 1-based input position of output sample i + 1.
            let centre = (i + 1) as f64 / scale + 0.5 * (1.0 - 1.0 / scale);
            let left = (centre - support / 2.0).floor() as i64;
            let raw: Vec<(i64, f64)> = (0..count)
                .map(|t| {
                    let j = left + t;
                    (j, stretch * keys(stretch * (centre - j as f64)))
                })
                .collect();
            let sum: f64 = raw.iter().map(|&(_, w)| w).sum();
            raw.into_iter()
                .filter(|&(_, w)| w != 0.0)
                .map(|(j, w)| (mirror(j - 1, n), w / sum))
                .collect()
        })
        .collect()
}

/// MATLAB's `imresize(img, 0.5)` (bicubic, antialiased) of a `w x h` plane: `ceil(w / 2) x
/// ceil(h / 2)`, rows first, then columns.
pub(crate) fn matlab_half(img: &[f64], w: usize, h: usize) -> (Vec<f64>, usize, usize) {
    let rows = matlab_taps(h, 0.5);
    let cols = matlab_taps(w, 0.5);
    let (ow, oh) = (cols.len(), rows.len());
    let mut tall = vec![0.0; w * oh];
    for (y, taps) in rows.iter().enumerate() {
        let out = &mut tall[y * w..(y + 1) * w];
        for &(j, wt) in taps {
            for (o, v) in out.iter_mut().zip(&img[j * w..(j + 1) * w]) {
                *o += wt * v;
            }
        }
    }
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        let src = &tall[y * w..(y + 1) * w];
        for (x, taps) in cols.iter().enumerate() {
            out[y * ow + x] = taps.iter().map(|&(j, wt)| wt * src[j]).sum();
        }
    }
    (out, ow, oh)
}

/// OpenCV's `interpolateCubic` (A = -0.75), in f32 and in its order of operations.
fn opencv_cubic_coeffs(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    let c3 = 1.0 - c0 - c1 - c2;
    [c0, c1, c2, c3]
}

/// The four source indices (replicated borders) and weights of every output sample along an
/// axis, as OpenCV's `resize` computes them: `fx = (float)((d + 0.5) * scale - 0.5)` with
/// `scale = 1 / (out / in)`.
fn opencv_taps(n: usize, m: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = 1.0 / (m as f64 / n as f64);
    (0..m)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let c = opencv_cubic_coeffs(f - s);
            let s = s as i64;
            let idx = [0, 1, 2, 3].map(|k| (s - 1 + k).clamp(0, n as i64 - 1) as usize);
            (idx, c)
        })
        .collect()
}

/// OpenCV's `cv::resize(src, (ow, oh), INTER_CUBIC)` of a single-precision plane, bit for
/// bit as OpenCV's portable code (without Intel IPP): the horizontal pass sums the four taps
/// left to right, the vertical pass nests them (`S0 b0 + (S1 b1 + (S2 b2 + S3 b3))`) on
/// groups of 4 columns (its 128-bit SIMD loop) and sums left to right on the remainder.
/// The same size is a copy.
pub(crate) fn opencv_cubic(src: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    if (ow, oh) == (w, h) {
        return src.to_vec();
    }
    let xt = opencv_taps(w, ow);
    let yt = opencv_taps(h, oh);
    let mut wide = vec![0.0f32; ow * h];
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        for (x, (i, c)) in xt.iter().enumerate() {
            wide[y * ow + x] =
                row[i[0]] * c[0] + row[i[1]] * c[1] + row[i[2]] * c[2] + row[i[3]] * c[3];
        }
    }
    let simd = ow - ow % 4;
    let mut out = vec![0.0f32; ow * oh];
    for (y, (i, b)) in yt.iter().enumerate() {
        let s = i.map(|r| &wide[r * ow..(r + 1) * ow]);
        let dst = &mut out[y * ow..(y + 1) * ow];
        for x in 0..ow {
            dst[x] = if x < simd {
                s[0][x] * b[0] + (s[1][x] * b[1] + (s[2][x] * b[2] + s[3][x] * b[3]))
            } else {
                s[0][x] * b[0] + s[1][x] * b[1] + s[2][x] * b[2] + s[3][x] * b[3]
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matlab_half_keeps_constants_and_averages_pairs() {
        let (w, h) = (10, 6);
        let flat = vec![7.5; w * h];
        let (out, ow, oh) = matlab_half(&flat, w, h);
        assert_eq!((ow, oh), (5, 3));
        assert!(out.iter().all(|v| (v - 7.5).abs() < 1e-12));
        // Interior weights of an output sample: symmetric about the pair (2i, 2i + 1),
        // 0.5 * keys(0.5 d) at d = 0.5, 1.5, 2.5, 3.5, normalised.
        let taps = matlab_taps(40, 0.5);
        let t = &taps[10];
        assert_eq!(t.len(), 8);
        assert_eq!(t[3].0, 20);
        assert_eq!(t[4].0, 21);
        assert!((t[3].1 - t[4].1).abs() < 1e-15 && (t[0].1 - t[7].1).abs() < 1e-15);
        let sum: f64 = t.iter().map(|p| p.1).sum();
        assert!((sum - 1.0).abs() < 1e-15);
        // Linear ramps stay linear in the interior.
        let ramp: Vec<f64> = (0..40).map(f64::from).collect();
        let (half, ..) = matlab_half(&ramp, 40, 1);
        assert!((half[10] - 20.5).abs() < 1e-12, "{}", half[10]);
    }

    #[test]
    fn mirror_repeats_the_edge() {
        assert_eq!(mirror(-1, 5), 0);
        assert_eq!(mirror(-2, 5), 1);
        assert_eq!(mirror(5, 5), 4);
        assert_eq!(mirror(6, 5), 3);
        assert_eq!(mirror(-7, 3), 0);
    }

    #[test]
    fn opencv_cubic_halves_with_its_coefficients() {
        // Halving an even axis samples at fx = 0.5: (-3, 19, 19, -3) / 32.
        assert_eq!(
            opencv_cubic_coeffs(0.5),
            [-0.09375, 0.59375, 0.59375, -0.09375]
        );
        let src: Vec<f32> = (0..8 * 2).map(|v| v as f32).collect();
        let out = opencv_cubic(&src, 8, 2, 4, 2);
        // Row 0, x = 1: taps 1..=4.
        let want = 1.0 * -0.09375 + 2.0 * 0.59375 + 3.0 * 0.59375 + 4.0 * -0.09375;
        assert_eq!(out[1], want);
        // Replicated left border: taps (0, 0, 1, 2).
        assert_eq!(out[0], 0.59375 + 2.0 * -0.09375);
        assert_eq!(opencv_cubic(&src, 8, 2, 8, 2), src);
    }
}
