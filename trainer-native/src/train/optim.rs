//! Optimisation pieces burn does not provide in the form the method needs:
//! - clipping by the *global* gradient norm (PyTorch's `clip_grad_norm_`, the reference's
//!   "grad clip 1"); burn's `GradientClipping::Norm` clips each tensor separately;
//! - an exponential moving average of the weights;
//! - warmup + cosine learning-rate schedule.

use burn::{
    module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param},
    optim::GradientsParams,
    tensor::{ElementConversion, Tensor, backend::AutodiffBackend, backend::Backend},
};
use serde::{Deserialize, Serialize};

/// Rescales `grads` so that their global L2 norm is at most `max_norm`; returns the norm
/// before clipping (also useful to log, and to catch NaN).
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    mut grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    struct SquaredNorm<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let sq = g.powi_scalar(2).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + sq,
                    None => sq,
                });
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    let mut sq = SquaredNorm::<B> {
        grads: &grads,
        total: None,
    };
    module.visit(&mut sq);
    let norm = sq
        .total
        .map_or(0.0, |t| f64::from(t.into_scalar().elem::<f32>()).sqrt());
    if norm.is_finite() && norm > max_norm {
        module.visit(&mut Scale {
            grads: &mut grads,
            factor: max_norm / (norm + 1e-6),
        });
    }
    (grads, norm)
}

/// `ema <- decay * ema + (1 - decay) * model`, parameter by parameter (same architecture).
pub fn ema_update<B: Backend, M: Module<B>>(ema: M, model: &M, decay: f64) -> M {
    struct Collect<B: Backend>(Vec<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Collect<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let t = param.val();
            let n = t.shape().num_elements();
            self.0.push(t.reshape([n]));
        }
    }
    struct Blend<B: Backend> {
        values: std::vec::IntoIter<Tensor<B, 1>>,
        decay: f64,
    }
    impl<B: Backend> ModuleMapper<B> for Blend<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, t, mapper) = param.consume();
            let other = self
                .values
                .next()
                .expect("same architecture")
                .reshape(t.shape());
            // `ema + (1 - d)(model - ema)`: a frozen parameter (model == ema) stays bit-exact,
            // which `d * ema + (1 - d) * model` does not guarantee in floating point.
            let blended = t.clone() + (other - t).mul_scalar(1.0 - self.decay);
            Param::from_mapped_value(id, blended, mapper)
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    ema.map(&mut Blend {
        values: collect.0.into_iter(),
        decay,
    })
}

/// Linear warmup to `peak`, then cosine decay to `peak * final_ratio` at `total_steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    #[serde(default = "default_final_ratio")]
    pub final_ratio: f64,
}

fn default_final_ratio() -> f64 {
    0.1
}

impl LrSchedule {
    /// Learning rate for the step about to run (`step` = steps completed so far).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak * (self.final_ratio + (1.0 - self.final_ratio) * cosine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::{
        backend::{Autodiff, Flex},
        nn::{Linear, LinearConfig},
    };

    type B = Autodiff<Flex>;

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = LrSchedule {
            peak: 1e-3,
            warmup_steps: 10,
            total_steps: 110,
            final_ratio: 0.1,
        };
        assert!((s.at(0) - 1e-4).abs() < 1e-12);
        assert!((s.at(9) - 1e-3).abs() < 1e-12);
        assert!((s.at(10) - 1e-3).abs() < 1e-12);
        assert!((s.at(60) - 0.55e-3).abs() < 1e-9);
        assert!((s.at(110) - 1e-4).abs() < 1e-12);
        assert!((s.at(500) - 1e-4).abs() < 1e-12);
    }

    #[test]
    fn global_norm_clipping_rescales_all_gradients_together() {
        let device = Default::default();
        let layer: Linear<B> = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<B, 2>::ones([4, 3], &device).mul_scalar(10.0);
        let loss = layer.forward(x).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        let (_, norm) = clip_global_norm(&layer, grads, f64::INFINITY);
        // d(sum)/dW = sum over the batch of x = 40 for each of the 6 weights; d/db = 4 for 2.
        let expected = (6.0 * 40f64.powi(2) + 2.0 * 16.0).sqrt();
        assert!((norm - expected).abs() < 1e-3, "{norm} vs {expected}");

        let loss = layer
            .forward(Tensor::<B, 2>::ones([4, 3], &device).mul_scalar(10.0))
            .sum();
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        let (clipped, _) = clip_global_norm(&layer, grads, 1.0);
        let (_, after) = clip_global_norm(&layer, clipped, f64::INFINITY);
        assert!((after - 1.0).abs() < 1e-4, "norm after clipping {after}");
    }

    #[test]
    fn ema_moves_towards_the_model() {
        let device = Default::default();
        let a: Linear<Flex> = LinearConfig::new(2, 2).init(&device);
        let b: Linear<Flex> = LinearConfig::new(2, 2).init(&device);
        let expected = a.weight.val().mul_scalar(0.9) + b.weight.val().mul_scalar(0.1);
        let ema = ema_update(a, &b, 0.9);
        let diff: f32 = (ema.weight.val() - expected).abs().max().into_scalar();
        assert!(diff < 1e-6);
    }
}
