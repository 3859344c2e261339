//! Criterion micro-benchmarks of the hot paths on the CPU backend (burn-flex): the `base`
//! UNet, encoder and decoder at one modest fixed size each, the `tiny` UNet, and the GDPO
//! reward of one training step. `cargo bench -p trainer-native --bench kernels`; the sample
//! counts are lowered so the whole set runs in a couple of minutes on 2 cores.
//!
//! Weights are random (`ModelConfig::init`): the cost of dense kernels does not depend on
//! the values.

use std::time::Duration;

use burn::tensor::{Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use model::ModelConfig;
use trainer_native::{
    backend::CpuBackend,
    loss::discriminator::DiscriminatorConfig,
    planar::Planar,
    reward::{
        NssModel, NssNaturalness, PsnrY, Reward, RewardMode, RewardTerm, attribute_ratios,
        realism::DiscriminatorRealism,
    },
};

type B = CpuBackend;

/// Output side the network benches stand for: 256x256 output pixels, i.e. a 32x32 latent
/// of `base` (f = 8).
const OUT_SIDE: usize = 256;

/// Blocks until `t` is computed (one value read back), whatever the backend's laziness.
fn settle<const D: usize>(t: Tensor<B, D>) {
    t.flatten::<1>(0, D - 1).narrow(0, 0, 1).into_data();
}

fn networks(c: &mut Criterion) {
    let device = Default::default();
    for preset in ["taef2", "tiny"] {
        let config = ModelConfig::preset(preset).expect("known preset");
        let model = config.init::<B>(&device).expect("valid preset");
        let f = config.downsample_factor();
        let latent = OUT_SIDE / f;
        let z = Tensor::<B, 4>::random(
            [1, config.latent_channels, latent, latent],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let image = Tensor::<B, 4>::random(
            [1, 3, OUT_SIDE, OUT_SIDE],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        let mut group = c.benchmark_group(format!("{preset}_{OUT_SIDE}px"));
        // Throughput in output pixels: criterion prints elements/s, i.e. pixels per second.
        group.throughput(Throughput::Elements((OUT_SIDE * OUT_SIDE) as u64));
        group.bench_function(BenchmarkId::new("unet_forward", latent), |b| {
            b.iter(|| settle(model.eps_prediction(z.clone(), z.clone(), 100).unwrap()));
        });
        if preset == "taef2" {
            group.bench_function(BenchmarkId::new("encoder", OUT_SIDE), |b| {
                b.iter(|| settle(model.encode(image.clone())));
            });
            group.bench_function(BenchmarkId::new("decoder", latent), |b| {
                b.iter(|| settle(model.decode(z.clone())));
            });
        }
        group.finish();
    }
}

/// A textured image in [0, 1] (a hash of the coordinates over smooth waves), so that the
/// NSS model finds sharp patches and the reward terms see non-trivial content.
fn texture(side: usize, seed: u32) -> Planar {
    let mut p = Planar::zeros(side, side);
    for c in 0..3 {
        for y in 0..side {
            for x in 0..side {
                let h = (x as u32)
                    .wrapping_mul(73_856_093)
                    .wrapping_add((y as u32).wrapping_mul(19_349_663))
                    .wrapping_add(seed.wrapping_mul(83_492_791) + c as u32)
                    .wrapping_mul(2_654_435_761);
                let noise = (h >> 8) as f32 / (1u32 << 24) as f32;
                let wave = ((x as f32 * 0.2).sin() * (y as f32 * 0.13).cos() + 1.0) * 0.5;
                *p.get_mut(c, x, y) = 0.7 * wave + 0.3 * noise;
            }
        }
    }
    p
}

/// One GDPO step's reward with the defaults of `configs/gdpo-tiny.toml`: 8 HR crops of
/// 64x64, 6 samples each, PSNR-Y fidelity, discriminator realism and NSS naturalness.
fn reward(c: &mut Criterion) {
    const CROP: usize = 64;
    const BATCH: usize = 8;
    const GROUP: usize = 6;
    let device = Default::default();
    let hr: Vec<Planar> = (0..BATCH as u32).map(|i| texture(CROP, i)).collect();
    let samples: Vec<Planar> = (0..(BATCH * GROUP) as u32)
        .map(|i| texture(CROP, 1000 + i))
        .collect();
    let references: Vec<Planar> = hr
        .iter()
        .flat_map(|h| std::iter::repeat_n(h.clone(), GROUP))
        .collect();
    let fit: Vec<Planar> = (0..8).map(|i| texture(128, 500 + i)).collect();
    let nss = NssModel::fit(&fit, 32).expect("textured images have sharp patches");
    let realism = || {
        let config = DiscriminatorConfig::default();
        DiscriminatorRealism::<B>::new(config.init::<B>(&device), device)
    };

    let mut group = c.benchmark_group(format!("reward_{BATCH}x{GROUP}_{CROP}px"));
    group.throughput(Throughput::Elements((BATCH * GROUP) as u64));
    let psnr = PsnrY { border: 4 };
    group.bench_function("psnr_y", |b| {
        b.iter(|| psnr.score(&samples, &references));
    });
    let naturalness = NssNaturalness(nss.clone());
    group.bench_function("nss", |b| {
        b.iter(|| naturalness.score(&samples, &references));
    });
    let critic = realism();
    group.bench_function("realism", |b| {
        b.iter(|| critic.score(&samples, &references));
    });
    group.bench_function("attribute_ratios", |b| {
        b.iter(|| {
            hr.iter()
                .map(|h| attribute_ratios(h, false))
                .collect::<Vec<_>>()
        });
    });
    let full = Reward {
        mode: RewardMode::Full,
        fidelity: Box::new(PsnrY { border: 4 }),
        detail: vec![Box::new(realism()), Box::new(NssNaturalness(nss))],
    };
    let ratios: Vec<_> = hr.iter().map(|h| attribute_ratios(h, false)).collect();
    group.bench_function("score_groups", |b| {
        b.iter(|| full.score_groups(&samples, &hr, &ratios, GROUP));
    });
    group.finish();
}

/// Few samples, short windows: the set is a regression check that runs in minutes on 2
/// cores, not a statistics study.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = networks, reward
}
criterion_main!(benches);
