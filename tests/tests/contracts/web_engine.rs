//! The web crate's engine, natively on its CPU backend (the same code the browser runs as its
//! fallback): the asynchronous step loop equals the model crate's tiler, reports progress,
//! stops on cancellation; bad weights, unavailable backends and jobs too large for the
//! device's buffers are clear errors.

use core::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use burn::backend::Flex;
use model::{
    HostImage, ModelConfig, NaosdOptions, StoredPrecision, TileOptions,
    tiling::{global_step_bytes, local_step_bytes},
};
use web::{
    WebError,
    engine::{BackendPreference, Engine, TileEvents},
    weight_summary,
};

/// Drives a future whose awaits are all ready (the CPU backend reads back at once).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

struct Recorder {
    progress: Vec<(usize, usize)>,
    cancel_at: Option<usize>,
}

impl TileEvents for Recorder {
    async fn before(&mut self, index: usize, _: usize) -> Result<(), WebError> {
        if self.cancel_at == Some(index) {
            return Err(WebError::Cancelled);
        }
        Ok(())
    }
    fn after(&mut self, done: usize, total: usize) {
        self.progress.push((done, total));
    }
}

/// One random `tiny` model per test process (burn initialises parameters lazily and
/// randomly: two `init`s are two models).
fn weights() -> Vec<u8> {
    static WEIGHTS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    WEIGHTS
        .get_or_init(|| {
            let model = ModelConfig::tiny()
                .init::<Flex>(&Default::default())
                .unwrap();
            model::save_weights(&model, StoredPrecision::F32).unwrap()
        })
        .clone()
}

fn image() -> HostImage {
    let data = (0..3 * 20 * 24)
        .map(|i| ((i % 17) as f32 / 8.0) - 1.0)
        .collect();
    HostImage::new(3, 20, 24, data).unwrap()
}

#[test]
fn browser_loop_equals_the_native_tiler() {
    let engine = block_on(Engine::load(&weights(), BackendPreference::Auto)).unwrap();
    assert_eq!(engine.report().backend, "cpu");
    assert!(engine.report().fallback_reason.is_some(), "says why");
    let file = model::read_weight_info(&weights()).unwrap();
    assert_eq!(engine.parameters(), file.parameters);
    let tiles = TileOptions { tile: 8 };
    let options = NaosdOptions::default();
    let mut events = Recorder {
        progress: vec![],
        cancel_at: None,
    };
    let done = block_on(engine.upscale(&image(), &options, None, tiles, &mut events)).unwrap();
    let model = model::load_weights::<Flex>(&weights(), &Default::default()).unwrap();
    let native = model::upscale_tiled(
        &model,
        &image(),
        &options,
        tiles,
        &Default::default(),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(done.image, native);
    let total = events.progress.len();
    assert!(total > 1);
    assert_eq!(events.progress.last(), Some(&(total, total)));
    // The plan it reports: an encode and a decode step per tile, one whole-image step.
    assert_eq!(done.steps, total);
    assert!(done.tiles > 1, "tile 8 splits a 20x24 image");
    assert_eq!(done.steps, 2 * done.tiles + 1);
}

#[test]
fn the_detail_knob_runs_any_point_of_the_range_and_refuses_what_it_cannot() {
    // A fidelity end and a detail end: one autoencoder, two UNets (parameters made concrete
    // by a load before the autoencoder is shared: `init` only describes random values).
    let device = Default::default();
    let low = model::load_weights::<Flex>(&weights(), &device).unwrap();
    let mut high = ModelConfig::tiny().init::<Flex>(&device).unwrap();
    high.autoencoder = low.autoencoder.clone();
    let bytes =
        model::save_detail_range(&low, &high, 0.3, "unet", None, StoredPrecision::F32).unwrap();
    let engine = block_on(Engine::load(&bytes, BackendPreference::Cpu)).unwrap();
    assert_eq!(engine.detail_default(), Some(0.3));
    let tiles = TileOptions { tile: 8 };
    let options = NaosdOptions::default();
    let run = |engine: &Engine, detail: Option<f32>| {
        let mut events = Recorder {
            progress: vec![],
            cancel_at: None,
        };
        block_on(engine.upscale(&image(), &options, detail, tiles, &mut events))
    };
    let native = |m: &model::Naosd<Flex>| {
        model::upscale_tiled(m, &image(), &options, tiles, &device, |_, _| {}).unwrap()
    };
    // The default is the file's; the ends are the two models exactly.
    assert_eq!(
        run(&engine, None).unwrap().image,
        run(&engine, Some(0.3)).unwrap().image
    );
    assert_eq!(run(&engine, Some(0.0)).unwrap().image, native(&low));
    assert_eq!(run(&engine, Some(1.0)).unwrap().image, native(&high));
    assert_ne!(
        run(&engine, Some(0.0)).unwrap().image,
        run(&engine, None).unwrap().image
    );
    // The loaded model is not changed by a job at another point.
    let range = model::read_detail_range(&bytes).unwrap().unwrap();
    let at_default = range.apply(low.clone(), 0.3).unwrap();
    assert_eq!(run(&engine, None).unwrap().image, native(&at_default));
    assert!(matches!(run(&engine, Some(1.5)), Err(WebError::Model(_))));
    // Weights with one model: a detail is a clear argument error.
    let plain = block_on(Engine::load(&weights(), BackendPreference::Cpu)).unwrap();
    assert_eq!(plain.detail_default(), None);
    assert!(matches!(
        run(&plain, Some(0.5)),
        Err(WebError::BadInput(m)) if m.contains("detail range")
    ));
    assert!(run(&plain, None).is_ok());
}

#[test]
fn cancellation_stops_the_job() {
    let engine = block_on(Engine::load(&weights(), BackendPreference::Cpu)).unwrap();
    let mut events = Recorder {
        progress: vec![],
        cancel_at: Some(1),
    };
    let tiles = TileOptions { tile: 8 };
    let err =
        block_on(engine.upscale(&image(), &NaosdOptions::default(), None, tiles, &mut events))
            .unwrap_err();
    assert!(matches!(err, WebError::Cancelled));
    assert_eq!(events.progress, vec![(1, events.progress[0].1)]);
}

#[test]
fn bad_weights_and_backends_are_errors() {
    assert!(block_on(Engine::load(b"nope", BackendPreference::Auto)).is_err());
    let Err(err) = block_on(Engine::load(&weights(), BackendPreference::WebGpu)) else {
        panic!("WebGPU cannot load natively");
    };
    assert!(err.to_string().contains("webgpu"), "{err}");
    assert!(BackendPreference::parse("cuda").is_err());
}

#[test]
fn bad_bytes_give_a_clear_error() {
    let err = weight_summary(b"definitely not a weight file").unwrap_err();
    assert!(
        err.to_string().contains("not a valid GDPO-SR weight file"),
        "{err}"
    );
}

/// An LR image of `side` x `side` pixels (flat grey: only its size matters here).
fn square(side: usize) -> HostImage {
    HostImage::new(3, side, side, vec![0.0; 3 * side * side]).unwrap()
}

#[test]
fn jobs_too_large_for_the_buffers_are_refused_before_any_work() {
    let engine = block_on(Engine::load(&weights(), BackendPreference::Cpu)).unwrap();
    let (limit, config) = (engine.report().max_buffer_bytes, engine.config().clone());
    let options = NaosdOptions::default();
    let s = options.scale;
    let mut events = Recorder {
        progress: vec![],
        cancel_at: None,
    };

    // A tile whose full-resolution steps need more than the device's largest buffer, on an
    // image whose whole-image step fits: the error names the tile size that fits.
    let side = (1..)
        .map(|k| 16 * k)
        .find(|&n| local_step_bytes(&config, n * s, n * s) > limit)
        .unwrap();
    assert!(global_step_bytes(&config, side * s, side * s) <= limit);
    let tile = TileOptions { tile: side };
    let Err(WebError::BadInput(message)) =
        block_on(engine.upscale(&square(side), &options, None, tile, &mut events))
    else {
        panic!("a tile of {side} px at x{s} was accepted");
    };
    let fits = engine.default_tiles(s).tile;
    assert!(fits < side);
    assert!(
        message.contains(&format!("tileSize {side}"))
            && message.contains(&format!("at most {fits}")),
        "{message}"
    );
    assert!(events.progress.is_empty(), "refused before the first step");
    // The default tiles on the same image pass.
    engine
        .check_fits(&square(side), &options, engine.default_tiles(s))
        .unwrap();

    // An image whose whole-image step alone exceeds the buffer, whatever the tiles (at x8,
    // so that the LR stays small).
    let options = NaosdOptions {
        scale: 8,
        ..options
    };
    let s = options.scale;
    let side = (1..)
        .map(|k| 64 * k)
        .find(|&n| global_step_bytes(&config, n * s, n * s) > limit)
        .unwrap();
    let Err(WebError::BadInput(message)) =
        engine.check_fits(&square(side), &options, engine.default_tiles(s))
    else {
        panic!("a {side}x{side} image at x{s} was accepted");
    };
    assert!(
        message.contains(&format!("a {side}x{side} image")) && message.contains("whole-image step"),
        "{message}"
    );
}
