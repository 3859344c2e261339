//! The 1000-step DDPM noise schedule with "scaled linear" betas (method.md section 1).
//!
//! `beta_t = (sqrt(0.00085) + (sqrt(0.012) - sqrt(0.00085)) * t / 999)^2`,
//! `abar_t = prod_{s <= t} (1 - beta_s)`. The table is computed in f64 on the host, so every
//! backend sees the same coefficients; tensors only ever get the two scalars of a timestep.

use burn::tensor::{Tensor, backend::Backend};

use crate::error::{ModelError, Result};

/// Number of diffusion steps of the schedule.
pub const NUM_TRAIN_TIMESTEPS: usize = 1000;
const BETA_START: f64 = 0.00085;
const BETA_END: f64 = 0.012;

/// Owns `alphas_cumprod` and the two formulas every stage uses: `add_noise` and x0-from-eps.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f64>,
}

impl Default for NoiseSchedule {
    fn default() -> Self {
        Self::scaled_linear()
    }
}

impl NoiseSchedule {
    /// The Stable Diffusion schedule (scaled linear betas, 1000 steps).
    pub fn scaled_linear() -> Self {
        let (start, end) = (BETA_START.sqrt(), BETA_END.sqrt());
        let last = (NUM_TRAIN_TIMESTEPS - 1) as f64;
        let mut prod = 1.0f64;
        let alphas_cumprod = (0..NUM_TRAIN_TIMESTEPS)
            .map(|t| {
                let beta = (start + (end - start) * t as f64 / last).powi(2);
                prod *= 1.0 - beta;
                prod
            })
            .collect();
        Self { alphas_cumprod }
    }

    /// `abar_t`.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] when `t >= 1000`.
    pub fn alpha_bar(&self, t: usize) -> Result<f64> {
        self.alphas_cumprod.get(t).copied().ok_or_else(|| {
            ModelError::InvalidInput(format!(
                "timestep {t} is outside the schedule (0..{NUM_TRAIN_TIMESTEPS})"
            ))
        })
    }

    /// `(sqrt(abar_t), sqrt(1 - abar_t))`: the signal and noise coefficients at `t`.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] when `t >= 1000`.
    pub fn coefficients(&self, t: usize) -> Result<(f64, f64)> {
        let abar = self.alpha_bar(t)?;
        Ok((abar.sqrt(), (1.0 - abar).sqrt()))
    }

    /// `add_noise(z, eps, t) = sqrt(abar_t) z + sqrt(1 - abar_t) eps`.
    ///
    /// # Shapes
    /// `z` and `eps` share any shape; so does the result.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] when `t >= 1000`.
    pub fn add_noise<B: Backend, const D: usize>(
        &self,
        z: Tensor<B, D>,
        eps: Tensor<B, D>,
        t: usize,
    ) -> Result<Tensor<B, D>> {
        let (signal, noise) = self.coefficients(t)?;
        Ok(z.mul_scalar(signal) + eps.mul_scalar(noise))
    }

    /// x0 from an eps prediction at `t`: `(z_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)`.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] when `t >= 1000`.
    pub fn x0_from_eps<B: Backend, const D: usize>(
        &self,
        z_t: Tensor<B, D>,
        eps_hat: Tensor<B, D>,
        t: usize,
    ) -> Result<Tensor<B, D>> {
        let (signal, noise) = self.coefficients(t)?;
        Ok((z_t - eps_hat.mul_scalar(noise)).div_scalar(signal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::{TestBackend, device, max_abs_diff};

    // Reference values from method.md section 1 (computed there in float64).
    #[test]
    fn matches_reference_constants() {
        let s = NoiseSchedule::scaled_linear();
        assert!((s.alpha_bar(100).unwrap() - 0.89422).abs() < 1e-4);
        assert!((s.alpha_bar(250).unwrap() - 0.67379).abs() < 1e-4);
        let (a, b) = s.coefficients(100).unwrap();
        assert!((a - 0.94563).abs() < 1e-4 && (b - 0.32523).abs() < 1e-4);
        let (a, b) = s.coefficients(250).unwrap();
        assert!((a - 0.82085).abs() < 1e-4 && (b - 0.57115).abs() < 1e-4);
    }

    #[test]
    fn alpha_bar_is_strictly_decreasing() {
        let s = NoiseSchedule::scaled_linear();
        let v: Vec<f64> = (0..NUM_TRAIN_TIMESTEPS)
            .map(|t| s.alpha_bar(t).unwrap())
            .collect();
        assert!(v.windows(2).all(|w| w[1] < w[0]));
        assert!(v[0] < 1.0 && v[999] > 0.0);
    }

    #[test]
    fn out_of_range_timestep_is_an_error() {
        let s = NoiseSchedule::scaled_linear();
        assert!(matches!(
            s.alpha_bar(1000),
            Err(ModelError::InvalidInput(_))
        ));
    }

    #[test]
    fn x0_from_eps_inverts_add_noise() {
        let dev = device();
        let s = NoiseSchedule::scaled_linear();
        let z = Tensor::<TestBackend, 2>::from_floats([[0.5, -1.0], [2.0, 0.0]], &dev);
        let eps = Tensor::<TestBackend, 2>::from_floats([[1.0, 0.3], [-0.7, 2.0]], &dev);
        let zt = s.add_noise(z.clone(), eps.clone(), 250).unwrap();
        let back = s.x0_from_eps(zt, eps, 250).unwrap();
        assert!(max_abs_diff(back, z) < 1e-5);
    }
}
