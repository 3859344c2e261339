//! Blur kernels of the Real-ESRGAN degradation (method.md section 3), after BasicSR's
//! `basicsr/data/degradations.py`: bivariate (generalized / plateau) Gaussians with a
//! rotated covariance, and the circular low-pass ("2-D sinc") kernel built on the Bessel
//! function J1.
//!
//! Kernels are computed in f64 and stored normalised (summing to 1) as f32.

use std::f64::consts::{FRAC_2_PI, FRAC_PI_4, PI};

use serde::{Deserialize, Serialize};

/// The kernel families of BasicSR's `random_mixed_kernels`, plus the sinc kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelFamily {
    /// Isotropic Gaussian.
    Iso,
    /// Anisotropic (rotated) Gaussian.
    Aniso,
    /// Isotropic generalized Gaussian, `exp(-0.5 q^beta)`.
    GeneralizedIso,
    /// Anisotropic generalized Gaussian.
    GeneralizedAniso,
    /// Isotropic plateau kernel, `1 / (1 + q^beta)`.
    PlateauIso,
    /// Anisotropic plateau kernel.
    PlateauAniso,
    /// Circular low-pass filter (2-D sinc).
    Sinc,
}

impl KernelFamily {
    /// The Gaussian-like families, in the order of `KernelProbs::as_array`.
    pub const GAUSSIAN_LIKE: [KernelFamily; 6] = [
        KernelFamily::Iso,
        KernelFamily::Aniso,
        KernelFamily::GeneralizedIso,
        KernelFamily::GeneralizedAniso,
        KernelFamily::PlateauIso,
        KernelFamily::PlateauAniso,
    ];

    /// Whether the family has a single sigma and no rotation (the sinc is circular too).
    pub fn is_isotropic(self) -> bool {
        matches!(
            self,
            KernelFamily::Iso
                | KernelFamily::GeneralizedIso
                | KernelFamily::PlateauIso
                | KernelFamily::Sinc
        )
    }
}

/// A square, odd-sized, normalised 2-D kernel, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// Side length (odd).
    pub size: usize,
    /// `size * size` weights, row-major, summing to 1.
    pub weights: Vec<f32>,
}

impl Kernel {
    /// The weight at `(row, col)`.
    pub fn get(&self, row: usize, col: usize) -> f32 {
        self.weights[row * self.size + col]
    }

    /// The centre weight.
    pub fn center(&self) -> f32 {
        let c = self.size / 2;
        self.get(c, c)
    }

    /// Normalises f64 values into a kernel; the sum is taken in f64 so that the f32
    /// weights sum to 1 up to f32 rounding.
    fn normalised(size: usize, values: Vec<f64>) -> Self {
        let sum: f64 = values.iter().sum();
        let weights = values.iter().map(|&v| (v / sum) as f32).collect();
        Self { size, weights }
    }
}

/// One sampled kernel, as plain data: the family, its size, and its shape parameters.
///
/// Fields a family does not use hold neutral values: `sigma_y == sigma_x` and
/// `rotation == 0` for isotropic families, `beta == 1` for plain Gaussians, sigmas 0 for
/// the sinc, `omega_c == 0` for the Gaussian-like families.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KernelSpec {
    pub family: KernelFamily,
    /// Odd side length.
    pub size: usize,
    pub sigma_x: f32,
    pub sigma_y: f32,
    /// Rotation of the covariance, radians.
    pub rotation: f32,
    /// Shape exponent of the generalized and plateau families.
    pub beta: f32,
    /// Cutoff frequency of the sinc kernel, radians per pixel.
    pub omega_c: f32,
}

impl KernelSpec {
    /// Builds the normalised kernel.
    pub fn build(&self) -> Kernel {
        let (sx, sy, theta, beta) = (
            self.sigma_x as f64,
            self.sigma_y as f64,
            self.rotation as f64,
            self.beta as f64,
        );
        match self.family {
            KernelFamily::Iso => bivariate_gaussian(self.size, sx, sx, 0.0),
            KernelFamily::Aniso => bivariate_gaussian(self.size, sx, sy, theta),
            KernelFamily::GeneralizedIso => {
                bivariate_generalized_gaussian(self.size, sx, sx, 0.0, beta)
            }
            KernelFamily::GeneralizedAniso => {
                bivariate_generalized_gaussian(self.size, sx, sy, theta, beta)
            }
            KernelFamily::PlateauIso => bivariate_plateau(self.size, sx, sx, 0.0, beta),
            KernelFamily::PlateauAniso => bivariate_plateau(self.size, sx, sy, theta, beta),
            KernelFamily::Sinc => circular_lowpass(self.size, self.omega_c as f64),
        }
    }
}

/// `x^T Sigma^-1 x` on BasicSR's `mesh_grid` (x = column offset, y = row offset from the
/// centre), with `Sigma = R diag(sx^2, sy^2) R^T` (BasicSR's `sigma_matrix2`).
fn quadratic_form(size: usize, sigma_x: f64, sigma_y: f64, theta: f64) -> Vec<f64> {
    let (s, c) = theta.sin_cos();
    let (vx, vy) = (sigma_x * sigma_x, sigma_y * sigma_y);
    let a = c * c * vx + s * s * vy;
    let b = c * s * (vx - vy);
    let d = s * s * vx + c * c * vy;
    let det = a * d - b * b;
    let (i00, i01, i11) = (d / det, -b / det, a / det);
    let half = (size / 2) as f64;
    let mut q = Vec::with_capacity(size * size);
    for row in 0..size {
        let y = row as f64 - half;
        for col in 0..size {
            let x = col as f64 - half;
            // Written so that negating (x, y), or swapping them when i00 == i11 and
            // i01 == 0, gives bit-identical values: the kernels are exactly symmetric.
            q.push(i00 * x * x + 2.0 * i01 * x * y + i11 * y * y);
        }
    }
    q
}

/// BasicSR's `bivariate_Gaussian`: `exp(-0.5 x^T Sigma^-1 x)`, normalised.
pub fn bivariate_gaussian(size: usize, sigma_x: f64, sigma_y: f64, theta: f64) -> Kernel {
    let q = quadratic_form(size, sigma_x, sigma_y, theta);
    Kernel::normalised(size, q.into_iter().map(|q| (-0.5 * q).exp()).collect())
}

/// BasicSR's `bivariate_generalized_Gaussian`: `exp(-0.5 (x^T Sigma^-1 x)^beta)`, normalised.
pub fn bivariate_generalized_gaussian(
    size: usize,
    sigma_x: f64,
    sigma_y: f64,
    theta: f64,
    beta: f64,
) -> Kernel {
    let q = quadratic_form(size, sigma_x, sigma_y, theta);
    Kernel::normalised(
        size,
        q.into_iter().map(|q| (-0.5 * q.powf(beta)).exp()).collect(),
    )
}

/// BasicSR's `bivariate_plateau`: `1 / ((x^T Sigma^-1 x)^beta + 1)`, normalised.
pub fn bivariate_plateau(size: usize, sigma_x: f64, sigma_y: f64, theta: f64, beta: f64) -> Kernel {
    let q = quadratic_form(size, sigma_x, sigma_y, theta);
    Kernel::normalised(
        size,
        q.into_iter().map(|q| 1.0 / (q.powf(beta) + 1.0)).collect(),
    )
}

/// BasicSR's `circular_lowpass_kernel`: the ideal circular low-pass filter of cutoff
/// `omega_c`, `omega_c J1(omega_c r) / (2 pi r)`, with its limit `omega_c^2 / (4 pi)` at the
/// centre, normalised. Some weights are negative (the ringing that it simulates).
pub fn circular_lowpass(size: usize, omega_c: f64) -> Kernel {
    let half = (size / 2) as f64;
    let mut values = Vec::with_capacity(size * size);
    for row in 0..size {
        let y = row as f64 - half;
        for col in 0..size {
            let x = col as f64 - half;
            let r = (x * x + y * y).sqrt();
            values.push(if r == 0.0 {
                omega_c * omega_c / (4.0 * PI)
            } else {
                omega_c * bessel_j1(omega_c * r) / (2.0 * PI * r)
            });
        }
    }
    Kernel::normalised(size, values)
}

/// The Bessel function of the first kind of order one, by the rational and asymptotic
/// approximations of Numerical Recipes (`bessj1`, absolute error about 1e-8).
pub fn bessel_j1(x: f64) -> f64 {
    let ax = x.abs();
    if ax < 8.0 {
        let y = x * x;
        let num = x
            * (72362614232.0
                + y * (-7895059235.0
                    + y * (242396853.1
                        + y * (-2972611.439 + y * (15704.48260 + y * (-30.16036606))))));
        let den = 144725228442.0
            + y * (2300535178.0 + y * (18583304.74 + y * (99447.43394 + y * (376.9991397 + y))));
        num / den
    } else {
        let z = 8.0 / ax;
        let y = z * z;
        let xx = ax - 3.0 * FRAC_PI_4;
        let p = 1.0
            + y * (0.183105e-2
                + y * (-0.3516396496e-4 + y * (0.2457520174e-5 + y * (-0.240337019e-6))));
        let q = 0.04687499995
            + y * (-0.2002690873e-3
                + y * (0.8449199096e-5 + y * (-0.88228987e-6 + y * 0.105787412e-6)));
        let ans = (FRAC_2_PI / ax).sqrt() * (xx.cos() * p - z * xx.sin() * q);
        if x < 0.0 { -ans } else { ans }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(family: KernelFamily, size: usize, sigma: f32) -> KernelSpec {
        let iso = family.is_isotropic();
        KernelSpec {
            family,
            size,
            sigma_x: sigma,
            sigma_y: if iso { sigma } else { sigma * 0.5 },
            rotation: if iso { 0.0 } else { 0.7 },
            beta: if family == KernelFamily::Iso || family == KernelFamily::Aniso {
                1.0
            } else {
                1.6
            },
            omega_c: 1.3,
        }
    }

    fn assert_kernel_invariants(k: &Kernel, transpose_symmetric: bool) {
        let n = k.size;
        assert_eq!(k.weights.len(), n * n);
        let sum: f32 = k.weights.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "sum {sum}");
        for i in 0..n {
            for j in 0..n {
                assert_eq!(
                    k.get(i, j),
                    k.get(n - 1 - i, n - 1 - j),
                    "180 degree symmetry at {i},{j}"
                );
                if transpose_symmetric {
                    assert_eq!(k.get(i, j), k.get(j, i), "transpose symmetry at {i},{j}");
                }
            }
        }
    }

    #[test]
    fn every_family_is_normalised_and_symmetric() {
        let families = KernelFamily::GAUSSIAN_LIKE
            .iter()
            .copied()
            .chain([KernelFamily::Sinc]);
        for family in families {
            for size in [7, 13, 21] {
                let k = spec(family, size, 1.7).build();
                assert_kernel_invariants(&k, family.is_isotropic());
            }
        }
    }

    #[test]
    fn anisotropic_kernels_are_not_transpose_symmetric() {
        let k = spec(KernelFamily::Aniso, 11, 2.0).build();
        assert!((0..11).any(|i| (0..11).any(|j| k.get(i, j) != k.get(j, i))));
    }

    #[test]
    fn larger_sigma_is_flatter() {
        for family in KernelFamily::GAUSSIAN_LIKE {
            let narrow = spec(family, 15, 0.8).build();
            let wide = spec(family, 15, 2.5).build();
            assert!(
                wide.center() < narrow.center(),
                "{family:?}: {} !< {}",
                wide.center(),
                narrow.center()
            );
            // The centre is the peak of every Gaussian-like kernel.
            let max = wide.weights.iter().copied().fold(f32::MIN, f32::max);
            assert_eq!(wide.center(), max, "{family:?}");
        }
    }

    #[test]
    fn circular_lowpass_sums_to_one_and_peaks_at_centre() {
        for (size, omega) in [(7, PI / 3.0), (13, PI / 5.0), (21, 2.0), (21, PI)] {
            let k = circular_lowpass(size, omega);
            assert_kernel_invariants(&k, true);
            let max = k.weights.iter().copied().fold(f32::MIN, f32::max);
            assert_eq!(k.center(), max);
        }
        // A lower cutoff passes less detail: a wider, flatter kernel.
        assert!(circular_lowpass(21, 0.8).center() < circular_lowpass(21, 2.5).center());
    }

    #[test]
    fn bessel_j1_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (1.0, 0.4400505857),
            (2.5, 0.4970941025),
            (10.0, 0.0434727462),
            (-1.0, -0.4400505857),
            (3.8317059702, 0.0),
        ] {
            let got = bessel_j1(x);
            assert!((got - want).abs() < 1e-7, "J1({x}) = {got}, want {want}");
        }
    }
}
