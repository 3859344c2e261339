//! Tiled inference: any image size with bounded device memory, and exactly the untiled output.
//!
//! The pipeline has two kinds of parts (docs/architecture.md, "Autoencoder split"):
//!
//! - **local**, at full to 1/4 resolution: the bicubic `LRup`, the encoder up to its last
//!   stride-2 convolution, the decoder's 2x stages and the colour fixes. Pure convolutions with
//!   a receptive field of at most [`LOCAL_HALO_LATENT`] latent cells: nearly all the FLOPs and
//!   all the large tensors.
//! - **global**, at 1/8 resolution: the autoencoder's midblocks (GroupNorm over the whole
//!   feature map), the noise, and the UNet (GroupNorm and self-attention over the whole
//!   latent). About 3 % of the FLOPs of the shipped model.
//!
//! So a job runs in three phases of steps ([`Step`]):
//!
//! 1. **Encode**, one step per tile: the local encoder on the tile plus a halo of
//!    [`LOCAL_HALO_LATENT`] cells; the interior of its 1/8 feature map equals the whole-image
//!    computation there and is copied into a whole-image feature map on the host.
//! 2. **Global**, one step: the rest of the pipeline up to the decoder's midblocks, on the
//!    whole feature map, with the noise of the whole image.
//! 3. **Decode**, one step per tile: the local decoder (and the colour fix) on the tile's
//!    features plus the halo; the interior of its output is copied into the output.
//!
//! Tiles do not overlap and nothing is blended: the result is the untiled pipeline's, up to
//! float rounding, for every tile size. The AdaIN colour fix matches statistics of the whole
//! image, so its decode steps also return `LRup`, the host sums both images' per-channel
//! moments over the tiles, and applies the fix when the job finishes.
//!
//! The job is a small state machine ([`TiledUpscale`]) rather than one function because its
//! callers read results back differently: natively with a blocking read, in the browser with
//! an `await` between steps (which is also where progress and cancellation happen). The
//! native and the browser front-ends drive the same plan, so for the same weights and seed
//! they produce the same output.

use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::{
    autoencoder::LOCAL_HALO_LATENT,
    blocks::ATTENTION_SCORE_BYTES,
    colour::{self, ColourFix},
    error::{ModelError, Result},
    pipeline::{MAX_SCALE, Naosd, NaosdOptions},
    preset::ModelConfig,
    resample::bicubic_upsample,
};

/// Largest output the tiler accepts, in pixels (64 MP, e.g. 8192 x 8192): the host holds
/// the output as f32, 12 bytes per pixel, so this bounds host memory at 768 MiB (plus the
/// whole-image 1/8 feature map, 4 bytes per output pixel for the shipped model).
pub const MAX_OUTPUT_PIXELS: usize = 64 << 20;

/// Output tiles are capped at this side: larger tiles hardly run faster and make progress
/// and cancellation coarse.
pub const MAX_OUTPUT_TILE: usize = 1024;

/// An image held on the host: `channels` planes of `height x width` f32 values (CHW order),
/// in [-1, 1] for model inputs and outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct HostImage {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl HostImage {
    /// Wraps `data` (CHW).
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] when `data` does not hold `channels * height * width`
    /// values.
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        let expected = channels
            .checked_mul(height)
            .and_then(|n| n.checked_mul(width));
        if expected != Some(data.len()) {
            return Err(ModelError::InvalidInput(format!(
                "{} values cannot be a {channels}x{height}x{width} image",
                data.len()
            )));
        }
        Ok(Self {
            channels,
            height,
            width,
            data,
        })
    }

    /// From interleaved 8-bit pixels (`stride` bytes per pixel, e.g. 4 for RGBA), keeping
    /// the first `channels` of each, mapped `v / 255 * 2 - 1`. Native and browser front-ends
    /// both convert through here, so they feed the model identical values.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] when the buffer does not hold `width * height` pixels or
    /// `channels > stride`.
    pub fn from_interleaved_u8(
        pixels: &[u8],
        width: usize,
        height: usize,
        stride: usize,
        channels: usize,
    ) -> Result<Self> {
        let expected = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(stride));
        if channels == 0 || channels > stride || expected != Some(pixels.len()) {
            return Err(ModelError::InvalidInput(format!(
                "{} bytes cannot be a {width}x{height} image of {stride} bytes per pixel",
                pixels.len()
            )));
        }
        let n = width * height;
        let mut data = vec![0.0f32; channels * n];
        for (i, px) in pixels.chunks_exact(stride).enumerate() {
            for c in 0..channels {
                data[c * n + i] = f32::from(px[c]) / 255.0 * 2.0 - 1.0;
            }
        }
        Self::new(channels, height, width, data)
    }

    /// Interleaved 8-bit pixels of `stride` bytes: the channels quantised from [-1, 1]
    /// (rounded, clamped), any further bytes of a pixel set to `fill` (e.g. opaque alpha).
    pub fn to_interleaved_u8(&self, stride: usize, fill: u8) -> Vec<u8> {
        let n = self.width * self.height;
        let mut out = vec![fill; n * stride];
        for (i, px) in out.chunks_exact_mut(stride).enumerate() {
            for (c, v) in px.iter_mut().take(self.channels).enumerate() {
                *v = quantise(self.data[c * n + i]);
            }
        }
        out
    }

    /// RGBA8 pixels of a 3-channel image: the colour quantised as in
    /// [`Self::to_interleaved_u8`], alpha from `alpha` (row-major, one byte per pixel: the
    /// separately upscaled transparency of the input) or opaque when there is none.
    pub fn to_rgba_u8(&self, alpha: Option<&[u8]>) -> Vec<u8> {
        let mut rgba = self.to_interleaved_u8(4, 255);
        if let Some(alpha) = alpha {
            for (px, &a) in rgba.chunks_exact_mut(4).zip(alpha) {
                px[3] = a;
            }
        }
        rgba
    }

    /// The values mapped from [-1, 1] to [0, 1] (clamped), CHW.
    pub fn to_unit_range(&self) -> Vec<f32> {
        self.data
            .iter()
            .map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0))
            .collect()
    }

    /// The `h x w` window at `(y, x)` as a `[1, C, h, w]` tensor. Rows and columns past the
    /// bottom and right edges repeat the last ones (the pipeline's edge padding).
    fn crop_tensor<B: Backend>(
        &self,
        (y, x, h, w): (usize, usize, usize, usize),
        device: &B::Device,
    ) -> Tensor<B, 4> {
        let mut out = Vec::with_capacity(self.channels * h * w);
        let last_col = self.width - 1;
        for c in 0..self.channels {
            for row in y..y + h {
                let line = &self.data[(c * self.height + row.min(self.height - 1)) * self.width..]
                    [..self.width];
                if x + w <= self.width {
                    out.extend_from_slice(&line[x..x + w]);
                } else {
                    out.extend((x..x + w).map(|col| line[col.min(last_col)]));
                }
            }
        }
        Tensor::from_data(TensorData::new(out, [1, self.channels, h, w]), device)
    }
}

/// How an image is cut into tiles for the full-resolution steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileOptions {
    /// Side of a tile in LR (input) pixels, without its halo; images no larger than this in
    /// both sides run as one tile. It changes speed and memory, never the output.
    pub tile: usize,
}

impl TileOptions {
    /// Tiles for a device whose largest single buffer may hold `max_buffer_bytes`: the
    /// largest output tile (up to [`MAX_OUTPUT_TILE`]) whose biggest tensor, halo included
    /// ([`local_step_bytes`]), takes at most half of that.
    pub fn for_device(config: &ModelConfig, scale: usize, max_buffer_bytes: u64) -> Self {
        let scale = scale.clamp(1, MAX_SCALE);
        let f = config.downsample_factor();
        let mut out = (MAX_OUTPUT_TILE / f).max(1) * f;
        while out > f && local_step_bytes(config, out, out) > max_buffer_bytes / 2 {
            out -= f;
        }
        Self {
            tile: (out / scale).max(1),
        }
    }
}

/// The halo of a tile's steps in latent cells: the local encoder's and decoder's reach, and
/// for the wavelet colour fix its low-pass reach on top (a decoded pixel is exact only
/// [`LOCAL_HALO_LATENT`] cells inside the window, and the low-pass of a tile pixel reads
/// [`colour::LOW_FREQUENCY_REACH`] pixels around it).
fn halo_cells(colour_fix: ColourFix, downsample: usize) -> usize {
    match colour_fix {
        ColourFix::Wavelet => {
            LOCAL_HALO_LATENT + colour::LOW_FREQUENCY_REACH.div_ceil(downsample.max(1))
        }
        ColourFix::None | ColourFix::Adain => LOCAL_HALO_LATENT,
    }
}

/// Estimated bytes of the largest f32 tensor of an encode or decode step whose tile covers
/// `out_h x out_w` output pixels: the autoencoder's full-resolution features over the tile
/// and its halo on every side (the largest halo, the wavelet fix's; AdaIN's decode steps
/// return 6 channels).
pub fn local_step_bytes(config: &ModelConfig, out_h: usize, out_w: usize) -> u64 {
    let f = config.downsample_factor();
    let halo = 2 * halo_cells(ColourFix::Wavelet, f) * f;
    let pixels = ((out_h + halo) * (out_w + halo)) as u64;
    let channels = config.autoencoder.channels.max(2 * config.image_channels) as u64;
    4 * pixels * channels
}

/// Estimated bytes of the largest f32 tensor of the global step of an `out_h x out_w`
/// output: the widest 1/8-resolution feature map (a midblock's global branch at 4x the
/// autoencoder's channels, or the UNet's first level) or one chunk of the UNet's attention
/// scores, whichever is larger.
pub fn global_step_bytes(config: &ModelConfig, out_h: usize, out_w: usize) -> u64 {
    let (m, f) = (config.size_multiple(), config.downsample_factor());
    let cells = (out_h.div_ceil(m) * m / f) * (out_w.div_ceil(m) * m / f);
    let widest = [
        4 * config.autoencoder.channels,
        2 * config.latent_channels,
        config.unet.channels[0],
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    (4 * (cells * widest) as u64).max(ATTENTION_SCORE_BYTES as u64)
}

/// One tile: a rectangle of cells of the latent grid (1/8 of the padded output), the unit of
/// the encode and decode steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Latent cells (output pixels / 8) of the tile, without its halo.
    pub y: usize,
    pub x: usize,
    pub height: usize,
    pub width: usize,
}

/// What step `index` of a [`TiledUpscale`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The local encoder on a tile and its halo.
    Encode(Tile),
    /// Midblocks, noise and UNet on the whole 1/8 feature map.
    Global,
    /// The local decoder (and colour fix) on a tile and its halo.
    Decode(Tile),
}

/// The fewest spans of at most `tile` cells covering `0..len`, without overlap, all of one
/// length except that the first ones take the remainder one cell each.
fn spans(len: usize, tile: usize) -> Vec<(usize, usize)> {
    let count = len.div_ceil(tile.max(1));
    let (base, extra) = (len / count, len % count);
    let mut start = 0;
    (0..count)
        .map(|i| {
            let n = base + usize::from(i < extra);
            start += n;
            (start - n, n)
        })
        .collect()
}

/// `start..start + len` grown by `halo` on both sides, clipped to `0..limit`.
fn with_halo((start, len): (usize, usize), halo: usize, limit: usize) -> (usize, usize) {
    (start.saturating_sub(halo), (start + len + halo).min(limit))
}

/// Running per-channel sums of the decoded image and of `LRup` over the padded image, for the
/// whole-image AdaIN fix.
#[derive(Debug, Clone, Default)]
struct AdainMoments {
    /// Per channel `[sum, sum of squares]` of the decoded image, then of `LRup`.
    decoded: Vec<[f64; 2]>,
    reference: Vec<[f64; 2]>,
    pixels: f64,
}

impl AdainMoments {
    /// `(x - mean_x) / std_x * std_ref + mean_ref` as a per-channel `(gain, offset)`, with
    /// [`colour::adain`]'s biased variance and epsilon.
    fn affine(&self) -> Vec<(f32, f32)> {
        let stats = |[s, q]: [f64; 2]| {
            let mean = s / self.pixels;
            let var = (q / self.pixels - mean * mean).max(0.0);
            (mean, (var + 1e-5).sqrt())
        };
        self.decoded
            .iter()
            .zip(&self.reference)
            .map(|(&d, &r)| {
                let ((md, sd), (mr, sr)) = (stats(d), stats(r));
                let gain = sr / sd;
                (gain as f32, (mr - md * gain) as f32)
            })
            .collect()
    }
}

/// An upscale of one image, driven step by step by the caller.
///
/// ```text
/// let mut job = TiledUpscale::new(model.config(), &image, &options, tiles)?;
/// for i in 0..job.len() {
///     let out = job.run(&model, &image, i, &device)?;  // launches step i on the device
///     job.accept(i, out.into_data())?;                 // or into_data_async().await
/// }
/// let sr = job.finish()?;
/// ```
#[derive(Debug, Clone)]
pub struct TiledUpscale {
    options: NaosdOptions,
    /// Size of the planned LR image, unpadded and padded to the network's size multiple.
    lr_size: (usize, usize),
    padded_lr: (usize, usize),
    /// Tile spans in latent cells of the padded image, per axis.
    rows: Vec<(usize, usize)>,
    cols: Vec<(usize, usize)>,
    downsample: usize,
    /// Latent cells around each tile that its steps also compute: the local parts' reach,
    /// plus the wavelet colour fix's low-pass reach when that fix is on.
    halo: usize,
    /// The whole-image 1/8 feature map: the encoder's until the global step, the decoder's
    /// after it.
    features: HostImage,
    output: HostImage,
    adain: Option<AdainMoments>,
    finished: Vec<bool>,
}

impl TiledUpscale {
    /// Plans the steps of `image` and allocates the output.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for an empty image, a channel count the model does not
    /// take, a scale outside `1..=MAX_SCALE`, a zero tile, or an output larger than
    /// [`MAX_OUTPUT_PIXELS`].
    pub fn new(
        config: &ModelConfig,
        image: &HostImage,
        options: &NaosdOptions,
        tiles: TileOptions,
    ) -> Result<Self> {
        let bad = |m: String| Err(ModelError::InvalidInput(m));
        let s = options.scale;
        if s == 0 || s > MAX_SCALE {
            return bad(format!("scale must be in 1..={MAX_SCALE}, got {s}"));
        }
        check_output_size(image.width, image.height, s)?;
        if image.channels != config.image_channels {
            return bad(format!(
                "expected {} channels, got {}",
                config.image_channels, image.channels
            ));
        }
        if tiles.tile == 0 {
            return bad("tile size must be positive".into());
        }
        // The LR is edge-padded so that its upscaled sides are multiples of the network's
        // size multiple, exactly as `Naosd::upscale` pads it.
        let pad = |len| config.padded_lr_side(len, s);
        let padded_lr = (pad(image.height), pad(image.width));
        let f = config.downsample_factor();
        let cells = (padded_lr.0 * s / f, padded_lr.1 * s / f);
        let tile_cells = (tiles.tile * s / f).max(1);
        let rows = spans(cells.0, tile_cells);
        let cols = spans(cells.1, tile_cells);
        let channels = config.autoencoder.channels;
        let (oh, ow) = (image.height * s, image.width * s);
        Ok(Self {
            options: options.clone(),
            lr_size: (image.height, image.width),
            padded_lr,
            finished: vec![false; 2 * rows.len() * cols.len() + 1],
            rows,
            cols,
            downsample: f,
            features: HostImage {
                channels,
                height: cells.0,
                width: cells.1,
                data: vec![0.0; channels * cells.0 * cells.1],
            },
            output: HostImage {
                channels: image.channels,
                height: oh,
                width: ow,
                data: vec![0.0; image.channels * oh * ow],
            },
            halo: halo_cells(options.colour_fix, f),
            adain: (options.colour_fix == ColourFix::Adain).then(|| AdainMoments {
                decoded: vec![[0.0; 2]; image.channels],
                reference: vec![[0.0; 2]; image.channels],
                pixels: 0.0,
            }),
        })
    }

    /// Number of steps: an encode and a decode step per tile, and the global step.
    pub fn len(&self) -> usize {
        self.finished.len()
    }

    /// Whether the plan has no steps (never: an image has at least one tile).
    pub fn is_empty(&self) -> bool {
        self.finished.is_empty()
    }

    /// Number of tiles of the encode and decode phases.
    pub fn tiles(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// What step `index` computes.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] when `index >= self.len()`.
    pub fn step(&self, index: usize) -> Result<Step> {
        let n = self.tiles();
        let tile = |i: usize| {
            let (row, col) = (i / self.cols.len(), i % self.cols.len());
            let ((y, height), (x, width)) = (self.rows[row], self.cols[col]);
            Tile {
                y,
                x,
                height,
                width,
            }
        };
        match index {
            i if i < n => Ok(Step::Encode(tile(i))),
            i if i == n => Ok(Step::Global),
            i if i <= 2 * n => Ok(Step::Decode(tile(i - n - 1))),
            _ => Err(ModelError::InvalidInput(format!(
                "step {index} of {}",
                self.len()
            ))),
        }
    }

    /// The latent cells a step of tile `t` computes: the tile with its halo, clipped to the
    /// padded image, as `(y0, y1, x0, x1)`.
    pub fn window(&self, t: &Tile) -> (usize, usize, usize, usize) {
        let (cy, cx) = (self.features.height, self.features.width);
        let (y0, y1) = with_halo((t.y, t.height), self.halo, cy);
        let (x0, x1) = with_halo((t.x, t.width), self.halo, cx);
        (y0, y1, x0, x1)
    }

    /// What the job computes: the output pixels of the full-resolution steps (every tile's
    /// window, halo included) and the FLOPs of all steps, counted layer by layer from the
    /// weights' shapes (the midblocks as if on every window: a slight overcount, they run
    /// once on the whole map).
    pub fn work<B: Backend>(&self, model: &Naosd<B>) -> (usize, u64) {
        let f = self.downsample;
        let (encoder, decoder) = (&model.autoencoder.encoder, &model.autoencoder.decoder);
        let (mut pixels, mut flops) = (0, 0);
        for i in 0..self.tiles() {
            if let Ok(Step::Encode(t)) = self.step(i) {
                let (y0, y1, x0, x1) = self.window(&t);
                let (h, w) = (y1 - y0, x1 - x0);
                pixels += h * w * f * f;
                flops += encoder.flops(h * f, w * f) + decoder.flops(h, w);
            }
        }
        let unet = model.unet.flops(self.features.height, self.features.width);
        (pixels, flops + unet)
    }

    /// `LRup` of the padded image over the cell window: the bicubic upsample of the LR
    /// window plus the kernel's 2-pixel reach, cropped, which equals the whole-image upsample
    /// there.
    fn lr_up_window<B: Backend>(
        &self,
        image: &HostImage,
        (y0, y1, x0, x1): (usize, usize, usize, usize),
        device: &B::Device,
    ) -> Tensor<B, 4> {
        let (s, f) = (self.options.scale, self.downsample);
        let lr_span = |lo: usize, hi: usize, limit: usize| {
            let start = (lo * f / s).saturating_sub(2);
            (start, ((hi * f).div_ceil(s) + 2).min(limit))
        };
        let (ly0, ly1) = lr_span(y0, y1, self.padded_lr.0);
        let (lx0, lx1) = lr_span(x0, x1, self.padded_lr.1);
        let lr = image.crop_tensor::<B>((ly0, lx0, ly1 - ly0, lx1 - lx0), device);
        let up = bicubic_upsample(lr, s);
        let (oy, ox) = (y0 * f - ly0 * s, x0 * f - lx0 * s);
        up.slice([
            0..1,
            0..image.channels,
            oy..oy + (y1 - y0) * f,
            ox..ox + (x1 - x0) * f,
        ])
    }

    fn pending(&self, index: usize) -> Result<Step> {
        let step = self.step(index)?;
        if self.finished[index] {
            return Err(ModelError::InvalidInput(format!(
                "step {index} is already done"
            )));
        }
        let n = self.tiles();
        let ready = match step {
            Step::Encode(_) => true,
            Step::Global => self.finished[..n].iter().all(|&d| d),
            Step::Decode(_) => self.finished[n],
        };
        if !ready {
            return Err(ModelError::InvalidInput(format!(
                "step {index} needs the steps before it"
            )));
        }
        Ok(step)
    }

    /// Launches step `index` on the model's device; read the result back and pass it to
    /// [`Self::accept`]. Steps run in order of phase: all encode steps (in any order), the
    /// global step, then the decode steps (in any order).
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for a bad or finished index, a step whose phase has not
    /// come, timesteps outside the schedule, or an image other than the planned one.
    pub fn run<B: Backend>(
        &self,
        model: &Naosd<B>,
        image: &HostImage,
        index: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        let step = self.pending(index)?;
        if (image.height, image.width) != self.lr_size || image.channels != self.output.channels {
            return Err(ModelError::InvalidInput(
                "the image is not the one this job was planned for".into(),
            ));
        }
        let o = &self.options;
        match step {
            Step::Encode(t) => {
                let window = self.window(&t);
                Ok(model.encode_features(self.lr_up_window(image, window, device)))
            }
            Step::Global => {
                let f = &self.features;
                let features = f.crop_tensor::<B>((0, 0, f.height, f.width), device);
                model.global_features(features, o.seed, o.t_add, o.t_diff)
            }
            Step::Decode(t) => {
                let window = self.window(&t);
                let (y0, y1, x0, x1) = window;
                let features = self
                    .features
                    .crop_tensor::<B>((y0, x0, y1 - y0, x1 - x0), device);
                let decoded = model.decode_features(features);
                Ok(match o.colour_fix {
                    ColourFix::None => decoded,
                    ColourFix::Wavelet => {
                        let reference = self.lr_up_window(image, window, device);
                        colour::apply(ColourFix::Wavelet, decoded, reference).clamp(-1.0, 1.0)
                    }
                    ColourFix::Adain => {
                        Tensor::cat(vec![decoded, self.lr_up_window(image, window, device)], 1)
                    }
                })
            }
        }
    }

    /// Takes the result of step `index` (as read back from [`Self::run`]).
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for a bad, finished or early index, data of the wrong
    /// shape, or a non-finite value (the model diverged: never hand out NaN pixels).
    pub fn accept(&mut self, index: usize, data: TensorData) -> Result<()> {
        let step = self.pending(index)?;
        let c = self.output.channels;
        let f = self.downsample;
        let (expected, window) = match step {
            Step::Encode(t) => {
                let (y0, y1, x0, x1) = self.window(&t);
                (
                    [1, self.features.channels, y1 - y0, x1 - x0],
                    Some((t, y0, x0)),
                )
            }
            Step::Global => (
                [
                    1,
                    self.features.channels,
                    self.features.height,
                    self.features.width,
                ],
                None,
            ),
            Step::Decode(t) => {
                let (y0, y1, x0, x1) = self.window(&t);
                let channels = if self.adain.is_some() { 2 * c } else { c };
                (
                    [1, channels, (y1 - y0) * f, (x1 - x0) * f],
                    Some((t, y0, x0)),
                )
            }
        };
        if data.shape.as_slice() != expected {
            return Err(ModelError::InvalidInput(format!(
                "step {index} should give {expected:?}, got {:?}",
                data.shape
            )));
        }
        let values = data
            .to_vec::<f32>()
            .map_err(|e| ModelError::InvalidInput(format!("step {index}: {e:?}")))?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::InvalidInput(format!(
                "step {index} gave NaN or infinite values"
            )));
        }
        let [_, _, wh, ww] = expected;
        match (step, window) {
            (Step::Global, _) => self.features.data = values,
            (Step::Encode(_), Some((t, y0, x0))) => {
                let fm = &mut self.features;
                for ch in 0..fm.channels {
                    for r in t.y..t.y + t.height {
                        let src = &values[(ch * wh + r - y0) * ww + t.x - x0..][..t.width];
                        fm.data[(ch * fm.height + r) * fm.width + t.x..][..t.width]
                            .copy_from_slice(src);
                    }
                }
            }
            (Step::Decode(_), Some((t, y0, x0))) => {
                let (py, px) = (t.y * f, t.x * f);
                let (ph, pw) = (t.height * f, t.width * f);
                if let Some(moments) = &mut self.adain {
                    // The moments are of the padded image, as the untiled pipeline takes them.
                    let plane = |ch: usize, r: usize| {
                        &values[(ch * wh + r + py - y0 * f) * ww + px - x0 * f..][..pw]
                    };
                    for ch in 0..c {
                        for r in 0..ph {
                            for (sums, k) in [
                                (&mut moments.decoded[ch], ch),
                                (&mut moments.reference[ch], c + ch),
                            ] {
                                for &v in plane(k, r) {
                                    let v = f64::from(v);
                                    sums[0] += v;
                                    sums[1] += v * v;
                                }
                            }
                        }
                    }
                    moments.pixels += (ph * pw) as f64;
                }
                let out = &mut self.output;
                let (oh, ow) = (out.height, out.width);
                let rows = py..(py + ph).min(oh);
                let cols = px.min(ow)..(px + pw).min(ow);
                // A tile wholly in the padding (large scales, small tiles) writes nothing.
                let inside = !rows.is_empty() && !cols.is_empty();
                for ch in (0..c).filter(|_| inside) {
                    for r in rows.clone() {
                        let src = &values[(ch * wh + r - y0 * f) * ww + cols.start - x0 * f..]
                            [..cols.len()];
                        out.data[(ch * oh + r) * ow + cols.start..][..cols.len()]
                            .copy_from_slice(src);
                    }
                }
            }
            _ => unreachable!("tile steps have a window"),
        }
        self.finished[index] = true;
        Ok(())
    }

    /// Number of steps done so far.
    pub fn done(&self) -> usize {
        self.finished.iter().filter(|&&b| b).count()
    }

    /// The output.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] while some step has not been done.
    pub fn finish(self) -> Result<HostImage> {
        if self.done() != self.len() {
            return Err(ModelError::InvalidInput(format!(
                "{} of {} steps are missing",
                self.len() - self.done(),
                self.len()
            )));
        }
        let mut out = self.output;
        if let Some(moments) = &self.adain {
            let plane = out.height * out.width;
            for (ch, (gain, offset)) in moments.affine().into_iter().enumerate() {
                for v in &mut out.data[ch * plane..][..plane] {
                    *v = *v * gain + offset;
                }
            }
        }
        out.data.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
        Ok(out)
    }
}

/// Checks an image size before anything large is allocated: not empty, and its output at
/// `scale` within [`MAX_OUTPUT_PIXELS`].
///
/// # Errors
/// [`ModelError::InvalidInput`] saying which limit the size breaks.
pub fn check_output_size(width: usize, height: usize, scale: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(ModelError::InvalidInput(format!(
            "the image is empty ({width}x{height})"
        )));
    }
    let out_pixels = (width.saturating_mul(scale)).checked_mul(height.saturating_mul(scale));
    if out_pixels.is_none_or(|p| p > MAX_OUTPUT_PIXELS) {
        return Err(ModelError::InvalidInput(format!(
            "a {width}x{height} image at x{scale} gives {}x{} pixels, more than the {} MP \
             limit; choose a smaller scale or image",
            width.saturating_mul(scale),
            height.saturating_mul(scale),
            MAX_OUTPUT_PIXELS >> 20
        )));
    }
    Ok(())
}

/// [-1, 1] to an 8-bit value (round half away from zero, clamped).
fn quantise(v: f32) -> u8 {
    (((v + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Upscales a host image step by step with blocking reads (native callers); `on_step(done,
/// total)` is called after each step.
///
/// # Errors
/// As [`TiledUpscale::new`], [`TiledUpscale::run`] and [`TiledUpscale::accept`].
pub fn upscale_tiled<B: Backend>(
    model: &Naosd<B>,
    image: &HostImage,
    options: &NaosdOptions,
    tiles: TileOptions,
    device: &B::Device,
    mut on_step: impl FnMut(usize, usize),
) -> Result<HostImage> {
    let mut job = TiledUpscale::new(model.config(), image, options, tiles)?;
    for i in 0..job.len() {
        let out = job.run(model, image, i, device)?;
        job.accept(i, out.into_data())?;
        on_step(i + 1, job.len());
    }
    job.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::{TestBackend, device, randomise};

    fn smooth_image(channels: usize, h: usize, w: usize) -> HostImage {
        let data = (0..channels * h * w)
            .map(|i| {
                let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
                ((x as f32 * 0.3 + c as f32).sin() * (y as f32 * 0.2).cos()) * 0.8
            })
            .collect();
        HostImage::new(channels, h, w, data).unwrap()
    }

    fn to_host(t: Tensor<TestBackend, 4>) -> HostImage {
        let [_, c, h, w] = t.dims();
        HostImage::new(c, h, w, t.into_data().to_vec().unwrap()).unwrap()
    }

    /// A stand-in for a trained model: random weights everywhere, so every part (midblock
    /// GroupNorms, attention, the correction) is active.
    fn model() -> Naosd<TestBackend> {
        let m = ModelConfig::tiny().init::<TestBackend>(&device()).unwrap();
        randomise(m, |_| true, 0.05)
    }

    fn untiled(model: &Naosd<TestBackend>, image: &HostImage, options: &NaosdOptions) -> HostImage {
        let lr = image.crop_tensor((0, 0, image.height, image.width), &device());
        to_host(model.upscale(lr, options).unwrap())
    }

    /// The largest per-channel factor `std(LRup) / std(decoded)` of the AdaIN fix.
    fn adain_gain(model: &Naosd<TestBackend>, image: &HostImage, scale: usize) -> f32 {
        let options = NaosdOptions {
            scale,
            ..Default::default()
        };
        let decoded = untiled(model, image, &options);
        let lr = image.crop_tensor::<TestBackend>((0, 0, image.height, image.width), &device());
        let lr_up = to_host(bicubic_upsample(lr, scale));
        let std = |img: &HostImage, c: usize| {
            let plane = &img.data[c * img.height * img.width..][..img.height * img.width];
            let mean = plane.iter().sum::<f32>() / plane.len() as f32;
            (plane.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / plane.len() as f32).sqrt()
        };
        (0..3)
            .map(|c| std(&lr_up, c) / std(&decoded, c).max(1e-6))
            .fold(1.0, f32::max)
    }

    #[test]
    fn spans_cover_the_axis_once_with_the_fewest_tiles() {
        for len in 1..200 {
            for tile in [1, 2, 3, 7, 16, 64, 300] {
                let spans = spans(len, tile);
                assert_eq!(spans.len(), len.div_ceil(tile), "len {len} tile {tile}");
                let mut next = 0;
                for &(start, n) in &spans {
                    assert_eq!(start, next, "len {len} tile {tile}: {spans:?}");
                    assert!(n >= 1 && n <= tile, "len {len} tile {tile}: {spans:?}");
                    next = start + n;
                }
                assert_eq!(next, len);
                let lens: Vec<usize> = spans.iter().map(|s| s.1).collect();
                let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(hi - lo <= 1, "equal shares: {lens:?}");
            }
        }
    }

    #[test]
    fn one_tile_equals_the_untiled_pipeline_exactly() {
        let model = model();
        let image = smooth_image(3, 13, 10);
        let options = NaosdOptions::default();
        let tiles = TileOptions { tile: 64 };
        let tiled = upscale_tiled(&model, &image, &options, tiles, &device(), |_, _| {}).unwrap();
        assert_eq!(tiled, untiled(&model, &image, &options));
    }

    /// The issue's promise: however small the tiles, the output is the untiled one within
    /// 1e-3, for every colour fix, scale and seed (the midblocks' GroupNorm and the UNet's
    /// attention see the whole image in the global step; the halo covers the local parts'
    /// reach).
    #[test]
    fn many_tiles_equal_the_untiled_output() {
        let model = model();
        let image = smooth_image(3, 40, 44);
        for (scale, tile, colour_fix, seed) in [
            (4, 12, ColourFix::None, 0),
            (4, 5, ColourFix::Wavelet, 1),
            (4, 12, ColourFix::Adain, 2),
            (2, 9, ColourFix::None, 3),
            (3, 7, ColourFix::None, 4),
        ] {
            let options = NaosdOptions {
                scale,
                seed,
                colour_fix,
                ..Default::default()
            };
            let mut steps = 0;
            let tiled = upscale_tiled(
                &model,
                &image,
                &options,
                TileOptions { tile },
                &device(),
                |_, total| steps = total,
            )
            .unwrap();
            assert!(steps >= 9, "x{scale} tile {tile}: only {steps} steps");
            let max = max_diff(&tiled, &untiled(&model, &image, &options));
            // AdaIN multiplies the decoded image by std(LRup) / std(decoded), which is large
            // for this nearly flat random-weight output: rounding differences grow by it.
            let gain = if colour_fix == ColourFix::Adain {
                adain_gain(&model, &image, scale)
            } else {
                1.0
            };
            assert!(
                max < 1e-3 * gain,
                "x{scale} tile {tile} {colour_fix:?}: max diff {max} (gain {gain})"
            );
        }
    }

    /// The wavelet path on an image several windows wide (windows of 48 + 2 x 13 x 8 px on a
    /// 320 px output) equals the untiled output. Measured 2026-12-03: on this random `tiny`
    /// model (nearly flat decoded output) the test also passes with the old 9-cell halo, so it
    /// guards the path, not the halo's size; the 13 cells follow from the reach arithmetic in
    /// `halo_cells` (a test on the shipped model would tell the two apart).
    #[test]
    fn wavelet_tiles_inside_a_large_image_equal_the_untiled_output() {
        let model = model();
        let image = smooth_image(3, 80, 80);
        let options = NaosdOptions {
            colour_fix: ColourFix::Wavelet,
            seed: 6,
            ..Default::default()
        };
        let tiles = TileOptions { tile: 12 };
        let tiled = upscale_tiled(&model, &image, &options, tiles, &device(), |_, _| {}).unwrap();
        let max = max_diff(&tiled, &untiled(&model, &image, &options));
        assert!(max < 1e-3, "max diff {max}");
    }

    fn max_diff(a: &HostImage, b: &HostImage) -> f32 {
        assert_eq!((a.height, a.width), (b.height, b.width));
        a.data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    }

    #[test]
    fn steps_run_in_phase_order_and_bad_results_are_errors() {
        let config = ModelConfig::tiny();
        let model = model();
        let opts = NaosdOptions::default();
        let image = smooth_image(3, 8, 12);
        let mut job = TiledUpscale::new(&config, &image, &opts, TileOptions { tile: 4 }).unwrap();
        let n = job.tiles();
        assert_eq!(job.len(), 2 * n + 1);
        assert_eq!(job.step(n).unwrap(), Step::Global);
        assert!(job.step(job.len()).is_err());
        assert!(
            job.run(&model, &image, n, &device()).is_err(),
            "global before encodes"
        );
        assert!(
            job.run(&model, &image, n + 1, &device()).is_err(),
            "decode before global"
        );
        let other = smooth_image(3, 9, 12);
        assert!(job.run(&model, &image.clone(), 0, &device()).is_ok());
        assert!(
            job.run(&model, &other, 0, &device()).is_err(),
            "another image"
        );
        let out = job.run(&model, &image, 0, &device()).unwrap();
        let [_, c, h, w] = out.dims();
        let nan = TensorData::new(vec![f32::NAN; c * h * w], [1, c, h, w]);
        assert!(job.accept(0, nan).is_err());
        let wrong = TensorData::new(vec![0.0f32; c * h * (w + 1)], [1, c, h, w + 1]);
        assert!(job.accept(0, wrong).is_err());
        job.accept(0, out.into_data()).unwrap();
        assert!(
            job.run(&model, &image, 0, &device()).is_err(),
            "step 0 is done"
        );
        assert!(job.clone().finish().is_err(), "unfinished job");
    }

    #[test]
    fn bad_requests_are_errors() {
        let config = ModelConfig::tiny();
        let opts = NaosdOptions::default();
        let t = TileOptions { tile: 16 };
        let empty = HostImage::new(3, 0, 5, vec![]).unwrap();
        assert!(TiledUpscale::new(&config, &empty, &opts, t).is_err());
        assert!(HostImage::new(3, 2, 2, vec![0.0; 11]).is_err());
        let gray = smooth_image(1, 4, 4);
        assert!(TiledUpscale::new(&config, &gray, &opts, t).is_err());
        let huge = HostImage {
            channels: 3,
            height: 5000,
            width: 5000,
            data: vec![],
        };
        let err = TiledUpscale::new(&config, &huge, &opts, t).unwrap_err();
        assert!(err.to_string().contains("MP"), "{err}");
        let zero = TileOptions { tile: 0 };
        assert!(TiledUpscale::new(&config, &smooth_image(3, 4, 4), &opts, zero).is_err());
    }

    #[test]
    fn eight_bit_round_trip_is_exact() {
        let rgba: Vec<u8> = (0..4 * 6).map(|i| (i * 37 % 256) as u8).collect();
        let img = HostImage::from_interleaved_u8(&rgba, 3, 2, 4, 3).unwrap();
        assert_eq!(img.channels, 3);
        let back = img.to_interleaved_u8(4, 255);
        for (i, (a, b)) in rgba.iter().zip(&back).enumerate() {
            if i % 4 == 3 {
                assert_eq!(*b, 255);
            } else {
                assert_eq!(a, b);
            }
        }
        assert!(HostImage::from_interleaved_u8(&rgba, 3, 3, 4, 3).is_err());
        assert!(HostImage::from_interleaved_u8(&rgba, 3, 2, 4, 5).is_err());
        assert_eq!(img.to_unit_range()[0], 0.0);
    }

    #[test]
    fn device_tiles_shrink_with_the_buffer_limit() {
        let base = ModelConfig::taef2();
        let roomy = TileOptions::for_device(&base, 4, 1 << 30);
        // (The halo alone, 2 x 13 cells of 8 px at 64 channels, is ~11 MiB: the limit must be
        // above twice that for a tile to fit.)
        let tight = TileOptions::for_device(&base, 4, 64 << 20);
        assert_eq!(roomy.tile, MAX_OUTPUT_TILE / 4);
        assert!(tight.tile < roomy.tile && tight.tile > 0);
        assert!(local_step_bytes(&base, tight.tile * 4, tight.tile * 4) <= 32 << 20);
        // The global step grows with the image, 1/64 of its pixels at up to 256 channels.
        let small = global_step_bytes(&base, 2048, 2048);
        let large = global_step_bytes(&base, 4096, 4096);
        assert_eq!(large, 4 * small);
    }
}
