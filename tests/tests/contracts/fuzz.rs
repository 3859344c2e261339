//! Property-based fuzzing (proptest) of the three parsers and planners that see untrusted
//! input: the weight-file loader, the image decoder path, and the tiler (its bookkeeping for
//! any geometry, and its output against the untiled pipeline). CI's toolchain is
//! stable, where cargo-fuzz's sanitizer builds cannot run, so these run a bounded number of
//! mutated cases each (`PROPTEST_CASES` raises it for a longer hunt); the seed corpus is the
//! checked-in hostile corpus (tests/hostile), and proptest keeps any failing case in
//! `tests/proptest-regressions/` so it replays first from then on.

use std::sync::OnceLock;

use burn::tensor::{Tensor, TensorData};
use model::{
    HostImage, ModelConfig, Naosd, NaosdOptions, StoredPrecision, TileOptions, TiledUpscale,
    load_weights, save_weights,
    tiling::{Step, check_output_size},
};
use proptest::prelude::*;
use trainer_native::image_io::decode_image_bytes;

type Cpu = burn::backend::Flex;

/// One edit of a byte string; positions wrap around the length.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit { at: usize, bit: u8 },
    SetByte { at: usize, value: u8 },
    Truncate { keep: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn mutation(focus: usize) -> impl Strategy<Value = Mutation> {
    // Half of the edits land in the first `focus` bytes, where the headers the parsers
    // trust live; the rest anywhere.
    let at = prop_oneof![0..focus.max(1), any::<usize>()];
    prop_oneof![
        (at.clone(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (at.clone(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        (at.clone(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (at, 1usize..64).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for edit in edits {
        let n = bytes.len().max(1);
        match edit {
            Mutation::FlipBit { at, bit } if !bytes.is_empty() => bytes[at % n] ^= 1 << bit,
            Mutation::SetByte { at, value } if !bytes.is_empty() => bytes[at % n] = *value,
            Mutation::Truncate { keep } => bytes.truncate(keep % n),
            Mutation::Insert { at, bytes: b } => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Remove { at, len } if !bytes.is_empty() => {
                let at = at % n;
                bytes.drain(at..(at + len).min(bytes.len()));
            }
            _ => {}
        }
    }
    bytes
}

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/proptest-regressions/fuzz.txt"
            )),
        )),
        ..ProptestConfig::default()
    }
}

/// A `tiny` model with every parameter perturbed, so that no layer is an identity (the
/// midblocks' GroupNorm branches and the UNet's attention all act).
fn random_tiny() -> &'static Naosd<Cpu> {
    static MODEL: OnceLock<Naosd<Cpu>> = OnceLock::new();
    MODEL.get_or_init(|| {
        let model = ModelConfig::tiny()
            .init::<Cpu>(&Default::default())
            .unwrap();
        trainer_native::bench::parity::randomise_all(model)
    })
}

/// A valid `tiny` weight file (f16, as the browser downloads it).
fn weight_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let model = ModelConfig::tiny()
            .init::<Cpu>(&Default::default())
            .unwrap();
        save_weights(&model, StoredPrecision::F16).unwrap()
    })
}

fn header_len(file: &[u8]) -> usize {
    8 + u64::from_le_bytes(file[..8].try_into().unwrap()) as usize
}

/// The corpus images the decoder fuzzing starts from (valid ones and hostile ones).
fn image_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/hostile/images");
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    })
}

proptest! {
    #![proptest_config(config(512))]

    /// The loader never panics; it either refuses the bytes or they still are the same model
    /// (an edit that changes nothing that is read).
    #[test]
    fn weight_loader_refuses_or_reproduces_mutated_files(
        edits in prop::collection::vec(mutation(header_len(weight_file())), 1..4)
    ) {
        let bytes = apply(weight_file().to_vec(), &edits);
        let _ = model::read_weight_info(&bytes);
        if let Ok(model) = load_weights::<Cpu>(&bytes, &Default::default()) {
            prop_assert_eq!(save_weights(&model, StoredPrecision::F16).unwrap(), weight_file());
        }
    }
}

proptest! {
    #![proptest_config(config(3072))]

    /// The decoder path of `upscale` (with its x4 output-size check) never panics on mutated
    /// images, and what it returns is consistent.
    #[test]
    fn image_decoder_survives_mutated_files(
        seed in 0usize..1000,
        edits in prop::collection::vec(mutation(64), 1..4),
    ) {
        let seeds = image_seeds();
        let bytes = apply(seeds[seed % seeds.len()].clone(), &edits);
        if let Ok(img) = decode_image_bytes(&bytes, |w, h| {
            Ok(check_output_size(w as usize, h as usize, 4)?)
        }) {
            let pixels = (img.rgb.width() * img.rgb.height()) as usize;
            prop_assert!(pixels > 0);
            prop_assert_eq!(img.rgb.as_raw().len(), 3 * pixels);
            if let Some(alpha) = &img.alpha {
                prop_assert_eq!(alpha.len(), pixels);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// For any image size, scale (up to the largest the API takes), tile size, preset and
    /// halo (the wavelet fix widens it) the plan's windows stay inside the padded latent grid
    /// and the decode steps tile the output exactly once: if every step returns the true
    /// picture on its window, the result is that picture. (Large scales with small tiles put
    /// whole tiles into the padding: they must write nothing and not fail.)
    #[test]
    fn tiler_assembles_any_geometry(
        width in 1usize..80,
        height in 1usize..80,
        scale in 1usize..=model::MAX_SCALE,
        tile in 1usize..96,
        taef2 in any::<bool>(),
        wavelet in any::<bool>(),
    ) {
        let config = if taef2 { ModelConfig::taef2() } else { ModelConfig::tiny() };
        // Above x4, outputs of at most 160 px a side (one-cell tiles are many small steps).
        let (width, height) = if scale > 4 {
            (width.min(160 / scale), height.min(160 / scale))
        } else {
            (width, height)
        };
        let image = HostImage::new(3, height, width, vec![0.0; 3 * height * width]).unwrap();
        let colour_fix = if wavelet { model::ColourFix::Wavelet } else { model::ColourFix::None };
        let options = NaosdOptions { scale, colour_fix, ..Default::default() };
        let mut job = TiledUpscale::new(&config, &image, &options, TileOptions { tile }).unwrap();
        let f = config.downsample_factor();
        let c = config.autoencoder.channels;
        // The padded LR (as `Naosd::upscale` pads it) in latent cells.
        let cells = |n: usize| config.padded_lr_side(n, scale) * scale / f;
        let (cells_h, cells_w) = (cells(height), cells(width));
        // Distinct values for every channel and place (in [-1, 1], so no clamping).
        let truth = |c: usize, y: usize, x: usize| ((c * 7919 + y * 613 + x) % 2001) as f32 / 1000.0 - 1.0;
        let plane = |channels: usize, (y0, y1, x0, x1): (usize, usize, usize, usize), unit: usize| {
            let (h, w) = ((y1 - y0) * unit, (x1 - x0) * unit);
            let mut values = Vec::with_capacity(channels * h * w);
            for ch in 0..channels {
                for r in 0..h {
                    for k in 0..w {
                        values.push(truth(ch, y0 * unit + r, x0 * unit + k));
                    }
                }
            }
            TensorData::new(values, [1, channels, h, w])
        };
        for i in 0..job.len() {
            let data = match job.step(i).unwrap() {
                Step::Encode(t) | Step::Decode(t) => {
                    let window = job.window(&t);
                    prop_assert!(window.1 <= cells_h && window.3 <= cells_w, "{window:?}");
                    prop_assert!(window.0 <= t.y && t.y + t.height <= window.1);
                    prop_assert!(window.2 <= t.x && t.x + t.width <= window.3);
                    if i < job.tiles() { plane(c, window, 1) } else { plane(3, window, f) }
                }
                Step::Global => plane(c, (0, cells_h, 0, cells_w), 1),
            };
            job.accept(i, data).unwrap();
        }
        let out = job.finish().unwrap();
        prop_assert_eq!((out.height, out.width), (height * scale, width * scale));
        for ch in 0..3 {
            for y in 0..out.height {
                for x in 0..out.width {
                    let got = out.data[(ch * out.height + y) * out.width + x];
                    prop_assert!(got == truth(ch, y, x), "({ch},{y},{x}): {got}");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// End to end on a random-weight `tiny` model: any geometry gives the untiled output
    /// within 1e-3.
    #[test]
    fn tiled_equals_untiled_for_any_geometry(
        width in 1usize..40,
        height in 1usize..40,
        scale in 1usize..=4,
        tile in 6usize..24,
        seed in 0u64..1000,
    ) {
        let model = random_tiny();
        let data = (0..3 * height * width)
            .map(|i| (i as f32 * 0.37 + seed as f32).sin() * 0.9)
            .collect::<Vec<f32>>();
        let image = HostImage::new(3, height, width, data.clone()).unwrap();
        let options = NaosdOptions { scale, seed, ..Default::default() };
        let tiled = model::upscale_tiled(&model, &image, &options, TileOptions { tile }, &Default::default(), |_, _| {}).unwrap();
        let lr = Tensor::<Cpu, 4>::from_data(TensorData::new(data, [1, 3, height, width]), &Default::default());
        let untiled: Vec<f32> = model.upscale(lr, &options).unwrap().into_data().to_vec().unwrap();
        let max = tiled.data.iter().zip(&untiled).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        prop_assert!(max < 1e-3, "max diff {max}");
    }
}
