//! The learned half of the GDPO "detail" reward: the stage-1b discriminator's realism score
//! (mean patch logit: higher means "looks like an HR photograph" to a critic trained to tell
//! HR crops from NAOSD outputs). It stands in for MANIQA/MUSIQ, which need pretrained weights.

use std::path::Path;

use burn::{
    module::Module,
    record::{BinFileRecorder, FullPrecisionSettings},
    tensor::backend::Backend,
};

use crate::{
    image_io::planars_to_tensor,
    loss::discriminator::{Discriminator, DiscriminatorConfig},
    planar::Planar,
    reward::RewardTerm,
};

/// Samples scored per discriminator call.
const CHUNK: usize = 16;

/// A frozen discriminator as a reward term.
pub struct DiscriminatorRealism<B: Backend> {
    discriminator: Discriminator<B>,
    device: B::Device,
}

impl<B: Backend> DiscriminatorRealism<B> {
    pub fn new(discriminator: Discriminator<B>, device: B::Device) -> Self {
        Self {
            discriminator,
            device,
        }
    }

    /// Loads `discriminator.bin` written by the NAOSD stage (`config` must be the one it was
    /// trained with).
    ///
    /// # Errors
    /// When the file is missing or does not match `config`.
    pub fn load(
        path: &Path,
        config: &DiscriminatorConfig,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        let discriminator = config
            .init::<B>(device)
            .load_file(
                path.with_extension(""),
                &BinFileRecorder::<FullPrecisionSettings>::new(),
                device,
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot load the discriminator {} (channels {:?}): {e:?}",
                    path.display(),
                    config.channels
                )
            })?;
        Ok(Self::new(discriminator, device.clone()))
    }
}

impl<B: Backend> RewardTerm for DiscriminatorRealism<B> {
    fn name(&self) -> &str {
        "realism"
    }

    fn score(&self, samples: &[Planar], _references: &[Planar]) -> Vec<f64> {
        let mut out = Vec::with_capacity(samples.len());
        // Same-size runs go through the network together.
        for chunk in samples.chunk_by(|a, b| (a.width, a.height) == (b.width, b.height)) {
            for part in chunk.chunks(CHUNK) {
                let logits = self
                    .discriminator
                    .forward(planars_to_tensor::<B>(part, &self.device));
                let [n, _, _, _] = logits.dims();
                let means = logits.flatten::<2>(1, 3).mean_dim(1).reshape([n]);
                let values: Vec<f32> = means
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .unwrap_or_else(|_| vec![f32::NAN; n]);
                out.extend(values.into_iter().map(f64::from));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Cpu = burn::backend::Flex;

    #[test]
    fn scores_every_sample_in_order_and_mixed_sizes() {
        let device = Default::default();
        let config = DiscriminatorConfig {
            channels: vec![8, 8],
        };
        let term = DiscriminatorRealism::<Cpu>::new(config.init(&device), device);
        let img = |w: usize, v: f32| {
            let mut p = Planar::zeros(w, w);
            p.data
                .iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = v * (i % 7) as f32 / 7.0);
            p
        };
        let samples = [img(16, 1.0), img(16, 0.2), img(24, 0.5), img(16, 1.0)];
        let scores = term.score(&samples, &[]);
        assert_eq!(scores.len(), 4);
        assert!(scores.iter().all(|s| s.is_finite()));
        // Same image, same score; a different image, a different score.
        assert_eq!(scores[0], scores[3]);
        assert_ne!(scores[0], scores[1]);
        // Scored alone, a sample gets the score it got in the batch.
        let alone = term.score(&samples[2..3], &[]);
        assert!((alone[0] - scores[2]).abs() < 1e-5);
    }
}
