//! The one piece of dense linear algebra NIQE needs: the pseudo-inverse of a small symmetric
//! matrix (36x36), through its eigen-decomposition by cyclic Jacobi rotations (accurate to
//! rounding for symmetric matrices, no dependency).

/// Eigenvalues and eigenvectors of the symmetric `n x n` row-major matrix `a`: `(values,
/// vectors)` with eigenvector `k` in column `k` of the row-major `vectors`.
pub(crate) fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "matrix of {n}x{n}");
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|p| (0..n).filter(move |&q| q != p).map(move |q| (p, q)))
            .map(|(p, q)| a[p * n + q].powi(2))
            .sum();
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q]: t = tan(phi), cot(2 phi) = theta.
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// Moore-Penrose pseudo-inverse of a symmetric matrix: eigenvalues at or below `1e-15` of the
/// largest (numpy's `pinv` cut-off) count as zero.
pub(crate) fn pinv_symmetric(a: &[f64], n: usize) -> Vec<f64> {
    let (values, vectors) = symmetric_eigen(a, n);
    let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let cutoff = 1e-15 * largest;
    let mut out = vec![0.0; n * n];
    for (k, &lambda) in values.iter().enumerate() {
        if lambda.abs() <= cutoff {
            continue;
        }
        let inv = 1.0 / lambda;
        for i in 0..n {
            let vik = vectors[i * n + k] * inv;
            for j in 0..n {
                out[i * n + j] += vik * vectors[j * n + k];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                for j in 0..n {
                    out[i * n + j] += a[i * n + k] * b[k * n + j];
                }
            }
        }
        out
    }

    #[test]
    fn inverse_of_a_positive_definite_matrix() {
        let n = 36;
        // B B^T + I with a deterministic B.
        let b: Vec<f64> = (0..n * n)
            .map(|i| ((i * 7919 % 1000) as f64 / 500.0) - 1.0)
            .collect();
        let mut bt = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                bt[j * n + i] = b[i * n + j];
            }
        }
        let mut a = matmul(&b, &bt, n);
        for i in 0..n {
            a[i * n + i] += 1.0;
        }
        let p = pinv_symmetric(&a, n);
        let id = matmul(&a, &p, n);
        for i in 0..n {
            for j in 0..n {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!(
                    (id[i * n + j] - want).abs() < 1e-9,
                    "{i},{j}: {}",
                    id[i * n + j]
                );
            }
        }
    }

    #[test]
    fn pseudo_inverse_of_a_singular_matrix() {
        // Rank one: u u^T with |u|^2 = 14; its pseudo-inverse is u u^T / 14^2.
        let u = [1.0, 2.0, 3.0];
        let a: Vec<f64> = (0..9).map(|i| u[i / 3] * u[i % 3]).collect();
        let p = pinv_symmetric(&a, 3);
        for i in 0..9 {
            assert!((p[i] - a[i] / 196.0).abs() < 1e-12, "{p:?}");
        }
    }
}
