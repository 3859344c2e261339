//! Property-based fuzzing (proptest) of the three parsers and planners that see untrusted
//! input: the weight-file loader, the image decoder path, and the tiler. CI's toolchain is
//! stable, where cargo-fuzz's sanitizer builds cannot run, so these run a bounded number of
//! mutated cases each (`PROPTEST_CASES` raises it for a longer hunt); the seed corpus is the
//! checked-in hostile corpus (tests/hostile), and proptest keeps any failing case in
//! `tests/proptest-regressions/` so it replays first from then on.

use std::sync::OnceLock;

use burn::tensor::TensorData;
use model::{
    HostImage, ModelConfig, NaosdOptions, StoredPrecision, TileOptions, TiledUpscale, load_weights,
    save_weights, tiling::check_output_size,
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
    #![proptest_config(config(1024))]

    /// For any image size, scale and tile geometry the plan covers the output exactly: if
    /// every tile returns the true picture on its region, the blended result is that picture.
    #[test]
    fn tiler_blends_any_geometry_back_to_the_whole(
        width in 1usize..160,
        height in 1usize..160,
        scale in 1usize..=4,
        tile in 1usize..96,
        overlap in 0usize..48,
    ) {
        let config = ModelConfig::tiny();
        let image = HostImage::new(3, height, width, vec![0.0; 3 * height * width]).unwrap();
        let options = NaosdOptions { scale, ..Default::default() };
        let mut job = TiledUpscale::new(&config, &image, &options, TileOptions { tile, overlap })
            .unwrap();
        let truth = |c: usize, y: usize, x: usize| (c as f32 * 0.3 + y as f32 * 0.011 - x as f32 * 0.007).sin();
        for i in 0..job.len() {
            let t = job.tile(i);
            prop_assert!(t.y + t.height <= height && t.x + t.width <= width);
            let (th, tw) = (t.height * scale, t.width * scale);
            let mut values = Vec::with_capacity(3 * th * tw);
            for c in 0..3 {
                for r in 0..th {
                    for k in 0..tw {
                        values.push(truth(c, t.y * scale + r, t.x * scale + k));
                    }
                }
            }
            job.blend(i, TensorData::new(values, [1, 3, th, tw])).unwrap();
        }
        let out = job.finish().unwrap();
        prop_assert_eq!((out.height, out.width), (height * scale, width * scale));
        for c in 0..3 {
            for y in 0..out.height {
                for x in 0..out.width {
                    let got = out.data[(c * out.height + y) * out.width + x];
                    prop_assert!((got - truth(c, y, x)).abs() < 1e-5, "({c},{y},{x}): {got}");
                }
            }
        }
    }
}
