//! The GDPO preference loss (method.md section 4, step 6) and its comparison variants.
//!
//! Inputs are per-sample mean denoising errors of the policy and the frozen reference,
//! `e_theta[b, g]` and `e_ref[b, g]`, and the group-relative advantages `A[b, g]` (from
//! `reward::group_advantages`). With `x_b = -(omega / 2) * sum_g A[b, g] (e_theta - e_ref)`:
//!
//! - GDPO: `mean_b -log sigmoid(x_b)`; `log 2` when policy == reference; its gradient lowers
//!   `e_theta` for positive advantages and raises it for negative ones; the sigmoid saturates as
//!   the policy "wins" the group (the implicit anchor to the reference, no explicit KL).
//! - With G = 2, `A = -+1/sqrt 2` and this is exactly Diffusion-DPO with `beta = omega / sqrt 2`
//!   (see the test).
//! - [`grpo_loss`]: an image-level GRPO-style surrogate for comparison: each sample's
//!   likelihood ratio approximated by `exp(-(omega / 2)(e_theta - e_ref))`, PPO-clipped.

use burn::tensor::{Tensor, activation::log_sigmoid, backend::Backend};

/// `x_b = -(omega / 2) * sum_g A (e_theta - e_ref)`, `[B, G] -> [B]`.
pub fn group_margin<B: Backend>(
    e_theta: Tensor<B, 2>,
    e_ref: Tensor<B, 2>,
    advantages: Tensor<B, 2>,
    omega: f64,
) -> Tensor<B, 1> {
    (advantages * (e_theta - e_ref))
        .sum_dim(1)
        .mul_scalar(-omega / 2.0)
        .squeeze_dim(1)
}

/// The GDPO loss `mean_b -log sigmoid(x_b)` (numerically stable through `log_sigmoid`).
pub fn gdpo_loss<B: Backend>(
    e_theta: Tensor<B, 2>,
    e_ref: Tensor<B, 2>,
    advantages: Tensor<B, 2>,
    omega: f64,
) -> Tensor<B, 1> {
    log_sigmoid(group_margin(e_theta, e_ref, advantages, omega))
        .neg()
        .mean()
}

/// Image-level GRPO-style loss: `-mean min(r A, clip(r, 1 - eps, 1 + eps) A)` with the
/// per-sample ratio `r = exp(-(omega / 2)(e_theta - e_ref))`, its log bounded by
/// [`MAX_LOG_RATIO`].
pub fn grpo_loss<B: Backend>(
    e_theta: Tensor<B, 2>,
    e_ref: Tensor<B, 2>,
    advantages: Tensor<B, 2>,
    omega: f64,
    clip: f64,
) -> Tensor<B, 1> {
    // The log-ratio is bounded first: PPO's min() keeps the unclipped term for negative
    // advantages, which an overflowing exp() would turn into an infinite loss.
    let ratio = (e_theta - e_ref)
        .mul_scalar(-omega / 2.0)
        .clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        .exp();
    let unclipped = ratio.clone() * advantages.clone();
    let clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages;
    unclipped.min_pair(clipped).mean().neg()
}

/// Bound of the per-sample log-ratio in [`grpo_loss`].
pub const MAX_LOG_RATIO: f64 = 20.0;

/// Fraction of groups the policy already "wins": `sum_g A (e_theta - e_ref) < 0`.
pub fn implicit_accuracy(e_theta: &[Vec<f64>], e_ref: &[Vec<f64>], advantages: &[Vec<f64>]) -> f64 {
    let wins = e_theta
        .iter()
        .zip(e_ref)
        .zip(advantages)
        .filter(|((t, r), a)| {
            t.iter()
                .zip(r.iter())
                .zip(a.iter())
                .map(|((t, r), a)| a * (t - r))
                .sum::<f64>()
                < 0.0
        })
        .count();
    wins as f64 / e_theta.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::group_advantages;
    use burn::{
        backend::{Autodiff, Flex},
        tensor::TensorData,
    };

    type B = Flex;
    type AD = Autodiff<Flex>;

    fn t2<Bk: Backend>(rows: &[Vec<f64>]) -> Tensor<Bk, 2> {
        let g = rows[0].len();
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), g]), &Default::default())
    }

    fn scalar(t: Tensor<B, 1>) -> f64 {
        f64::from(t.into_scalar())
    }

    #[test]
    fn policy_equal_to_reference_gives_log_two() {
        let e = vec![vec![0.3, 0.5, 0.2, 0.9, 0.4, 0.1]; 3];
        let a = vec![group_advantages(&[1.0, 2.0, 0.5, 3.0, 2.0, 1.0]); 3];
        let loss = scalar(gdpo_loss(t2(&e), t2(&e), t2(&a), 5000.0));
        assert!((loss - std::f64::consts::LN_2).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn gradient_lowers_error_of_positive_advantages_and_matches_finite_differences() {
        let rewards = [0.9, 0.1, 0.5, 0.3];
        let a = vec![group_advantages(&rewards)];
        let e_ref = vec![vec![0.20, 0.22, 0.19, 0.21]];
        let e_theta = vec![vec![0.201, 0.219, 0.190, 0.2105]];
        let omega = 50.0;
        let theta = t2::<AD>(&e_theta).require_grad();
        let loss = gdpo_loss(theta.clone(), t2(&e_ref), t2(&a), omega);
        let grads = loss.backward();
        let g: Vec<f32> = theta.grad(&grads).unwrap().into_data().to_vec().unwrap();
        for (i, (gi, ai)) in g.iter().zip(&a[0]).enumerate() {
            // Descent moves e_theta against the gradient: down where A > 0, up where A < 0.
            assert_eq!(
                gi.signum(),
                ai.signum() as f32,
                "sample {i}: grad {gi}, A {ai}"
            );
            let h = 1e-3;
            let mut plus = e_theta.clone();
            plus[0][i] += h;
            let mut minus = e_theta.clone();
            minus[0][i] -= h;
            let fd = (scalar(gdpo_loss(t2(&plus), t2(&e_ref), t2(&a), omega))
                - scalar(gdpo_loss(t2(&minus), t2(&e_ref), t2(&a), omega)))
                / (2.0 * h);
            assert!(
                (f64::from(*gi) - fd).abs() < 2e-3 * fd.abs().max(1.0),
                "{gi} vs {fd}"
            );
        }
    }

    #[test]
    fn two_samples_are_diffusion_dpo() {
        // Winner w (higher reward) and loser l: Diffusion-DPO's
        // -log sigmoid(-beta ((e_w - e_w_ref) - (e_l - e_l_ref))) with beta = omega / (2 sqrt 2)
        // (A = +-1/sqrt 2, the 1e-8 of the std is negligible).
        let a = vec![group_advantages(&[1.0, 0.0])];
        let (e_w, e_l, r_w, r_l) = (0.31, 0.27, 0.30, 0.29);
        let omega = 100.0;
        let ours = scalar(gdpo_loss(
            t2(&[vec![e_w, e_l]]),
            t2(&[vec![r_w, r_l]]),
            t2(&a),
            omega,
        ));
        let beta = omega / (2.0 * std::f64::consts::SQRT_2);
        let x = -beta * ((e_w - r_w) - (e_l - r_l));
        let dpo = -(1.0 / (1.0 + (-x).exp())).ln();
        assert!((ours - dpo).abs() < 1e-5, "{ours} vs {dpo}");
    }

    #[test]
    fn saturates_when_the_policy_wins_and_accuracy_counts_wins() {
        let a = vec![group_advantages(&[1.0, 0.0])];
        let winning = scalar(gdpo_loss(
            t2(&[vec![0.1, 0.5]]),
            t2(&[vec![0.3, 0.3]]),
            t2(&a),
            5000.0,
        ));
        assert!(winning < 1e-6, "{winning}");
        let losing = scalar(gdpo_loss(
            t2(&[vec![0.5, 0.1]]),
            t2(&[vec![0.3, 0.3]]),
            t2(&a),
            5000.0,
        ));
        assert!(
            losing > 100.0 && losing.is_finite(),
            "stable for large margins: {losing}"
        );
        let acc = implicit_accuracy(
            &[vec![0.1, 0.5], vec![0.5, 0.1]],
            &[vec![0.3, 0.3], vec![0.3, 0.3]],
            &[a[0].clone(), a[0].clone()],
        );
        assert_eq!(acc, 0.5);
    }

    #[test]
    fn grpo_variant_is_zero_mean_at_the_reference_and_clipped() {
        let a = vec![group_advantages(&[0.2, 0.9, 0.4])];
        let e = vec![vec![0.3, 0.2, 0.25]];
        let at_ref = scalar(grpo_loss(t2(&e), t2(&e), t2(&a), 5000.0, 0.2));
        assert!(
            at_ref.abs() < 1e-6,
            "ratios 1, advantages sum to 0: {at_ref}"
        );
        let far = vec![vec![0.0, 0.0, 0.0]];
        let clipped = scalar(grpo_loss(t2(&far), t2(&e), t2(&a), 5000.0, 0.2));
        assert!(clipped.is_finite());
    }
}
