//! Size and cost of the presets (`trainer-native info`), the figures in docs/architecture.md.

use burn::{module::Module, tensor::backend::Backend};
use model::ModelConfig;

use crate::backend::BackendTask;

/// Parameter count and cost of one preset.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetCost {
    pub name: String,
    pub parameters: usize,
    /// Of which in the encoder, UNet and decoder.
    pub parameters_by_part: [usize; 3],
    /// GFLOPs (2 per multiply-add) per output megapixel on 512x512 output tiles, counted
    /// layer by layer from the weights' shapes.
    pub gflops_per_output_mp: f64,
    /// Of which in the encoder, UNet and decoder.
    pub gflops_by_part: [f64; 3],
}

/// Measures every preset on the given backend (the counts do not depend on it).
pub struct PresetCosts;

impl BackendTask for PresetCosts {
    type Output = Vec<PresetCost>;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Vec<PresetCost>> {
        // Quoted on 512x512 output tiles, the unit tiled inference works in: convolutions cost
        // the same per pixel at any size, self-attention grows with the tile's token count.
        ["tiny", "taef2"]
            .into_iter()
            .map(|name| {
                let config = ModelConfig::preset(name)?;
                let model = config.init::<B>(&device)?;
                let ae = &model.autoencoder;
                let gflops_by_part = model.gflops_per_output_megapixel();
                Ok(PresetCost {
                    name: name.to_string(),
                    parameters: model.num_params(),
                    parameters_by_part: [
                        ae.encoder.num_params(),
                        model.unet.num_params(),
                        ae.decoder.num_params(),
                    ],
                    gflops_per_output_mp: gflops_by_part.iter().sum(),
                    gflops_by_part,
                })
            })
            .collect()
    }
}

/// Markdown table of the costs.
pub fn cost_table(costs: &[PresetCost]) -> String {
    let mut s = String::from(
        "| preset | parameters (E / UNet / D) | GFLOPs per output MP, 512x512 tiles (E / UNet / D) |\n|---|---|---|\n",
    );
    for c in costs {
        let [pe, pu, pd] = c.parameters_by_part;
        let [fe, fu, fd] = c.gflops_by_part;
        s += &format!(
            "| {} | {:.2} M ({:.2} / {:.2} / {:.2}) | {:.1} ({fe:.1} / {fu:.1} / {fd:.1}) |\n",
            c.name,
            c.parameters as f64 / 1e6,
            pe as f64 / 1e6,
            pu as f64 / 1e6,
            pd as f64 / 1e6,
            c.gflops_per_output_mp
        );
    }
    s
}
