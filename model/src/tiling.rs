//! Tiled inference: any image size with bounded device memory, the same on every platform.
//!
//! A large LR image is cut into overlapping tiles; each tile runs the whole one-step pipeline
//! ([`Naosd::upscale_at`]) with the noise window of its *global* latent position, and the
//! upscaled tiles are blended on the host with separable linear ramps across the overlaps.
//! Because the noise is addressed by global coordinates ([`crate::NoiseField`]), two tiles
//! that overlap see the same noise there, and a tile whose receptive field fits inside the
//! overlap reproduces the untiled output; what remains is the network's long-range context
//! (the UNet's middle self-attention), which the ramps smooth over.
//!
//! The job is a small state machine ([`TiledUpscale`]) rather than one function because its
//! callers read results back differently: natively with a blocking read, in the browser with
//! an `await` between tiles (which is also where progress and cancellation happen). The
//! native and the browser front-ends drive the same plan, so for the same weights, seed and
//! tile size they produce the same output.

use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::{
    error::{ModelError, Result},
    pipeline::{MAX_SCALE, Naosd, NaosdOptions},
    preset::ModelConfig,
};

/// Largest output the tiler accepts, in pixels (64 MP, e.g. 8192 x 8192): the host holds
/// the output as f32, 12 bytes per pixel, so this bounds host memory at 768 MiB.
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

    /// The `h x w` window at `(y, x)` as a `[1, C, h, w]` tensor.
    fn crop_tensor<B: Backend>(
        &self,
        (y, x, h, w): (usize, usize, usize, usize),
        device: &B::Device,
    ) -> Tensor<B, 4> {
        let mut out = Vec::with_capacity(self.channels * h * w);
        for c in 0..self.channels {
            for row in y..y + h {
                let start = (c * self.height + row) * self.width + x;
                out.extend_from_slice(&self.data[start..start + w]);
            }
        }
        Tensor::from_data(TensorData::new(out, [1, self.channels, h, w]), device)
    }
}

/// How an image is cut into tiles, in LR (input) pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileOptions {
    /// Side of a tile; images no larger than this in both sides run as one tile.
    pub tile: usize,
    /// Overlap between neighbouring tiles.
    pub overlap: usize,
}

impl TileOptions {
    /// Tiles for a device whose largest single buffer may hold `max_buffer_bytes`: the
    /// largest output tile (up to [`MAX_OUTPUT_TILE`]) whose biggest activation, estimated by
    /// [`largest_activation_bytes`], takes at most half of that, and an overlap of an eighth
    /// of the tile.
    pub fn for_device(config: &ModelConfig, scale: usize, max_buffer_bytes: u64) -> Self {
        let scale = scale.clamp(1, MAX_SCALE);
        let m = config.size_multiple();
        let mut out = (MAX_OUTPUT_TILE / m).max(1) * m;
        while out > m && largest_activation_bytes(config, out, out) > max_buffer_bytes / 2 {
            out -= m;
        }
        let tile = (out / scale).max(1);
        Self {
            tile,
            overlap: (tile / 8).max(1),
        }
    }
}

/// Estimated bytes of the largest single f32 tensor of one upscale at `out_h x out_w`: the
/// full-resolution image, the first autoencoder level, the UNet's first level, or the
/// middle self-attention matrix (which grows with the square of the token count).
pub fn largest_activation_bytes(config: &ModelConfig, out_h: usize, out_w: usize) -> u64 {
    let pixels = (out_h * out_w) as u64;
    // E's first and D's last layers run at full resolution with `channels` channels.
    let ae_first = pixels * config.autoencoder.channels as u64;
    let f = config.downsample_factor() as u64;
    let latent = pixels / (f * f);
    let unet_first = latent * config.unet.channels[0] as u64 * 2;
    let deepest = latent >> (2 * (config.unet.channels.len() - 1));
    let attention = deepest * deepest * config.unet.attention_heads as u64;
    4 * [3 * pixels, ae_first, unet_first, attention]
        .into_iter()
        .max()
        .unwrap_or(0)
}

/// One tile: an LR rectangle and its place in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Row and column of the tile in the grid.
    pub row: usize,
    pub col: usize,
    /// LR rectangle.
    pub y: usize,
    pub x: usize,
    pub height: usize,
    pub width: usize,
}

/// Start positions and lengths of the tiles along one axis, plus each tile's blend weights.
#[derive(Debug, Clone)]
struct AxisPlan {
    /// `(start, len)` in LR pixels.
    spans: Vec<(usize, usize)>,
    /// Per tile, the normalised blend weight of each output pixel it covers: the weights of
    /// all tiles covering an output pixel sum to 1.
    weights: Vec<Vec<f32>>,
}

impl AxisPlan {
    /// The fewest tiles of at most `tile` pixels that overlap by about `overlap`, all of one
    /// length (the last one up to `align - 1` longer), with starts on multiples of `align`,
    /// spread evenly.
    ///
    /// The tiles share the length equally rather than each taking the full `tile`: full
    /// tiles would overlap by whatever slack is left, computing pixels twice for nothing (at
    /// 504 LR pixels and `tile` 256 three full tiles cover 768 pixels, 2.3x the image's area
    /// in two dimensions; three equal tiles of 192 cover 576, 1.3x).
    fn new(len: usize, tile: usize, overlap: usize, align: usize, scale: usize) -> Self {
        let tile = tile.max(align).div_ceil(align) * align;
        let spans = if len <= tile {
            vec![(0, len)]
        } else {
            let stride = (tile.saturating_sub(overlap) / align).max(1) * align;
            let count = (len - tile).div_ceil(stride) + 1;
            // `len > tile`, so there are at least two tiles.
            let spans_of = |t: usize| -> Vec<(usize, usize)> {
                let last_start = (len - t) / align * align;
                (0..count)
                    .map(|i| {
                        let start = (i * last_start / (count - 1)) / align * align;
                        let end = if i + 1 == count { len } else { start + t };
                        (start, end - start)
                    })
                    .collect()
            };
            let overlaps = |spans: &[(usize, usize)]| {
                spans
                    .windows(2)
                    .all(|w| w[0].0 + w[0].1 >= w[1].0 + overlap)
            };
            // The equal share, grown by `align` until the aligned starts keep the overlap
            // (at `tile` it is the full-tile plan, which is taken as it is).
            let mut t = (len + (count - 1) * overlap)
                .div_ceil(count)
                .div_ceil(align)
                * align;
            loop {
                let spans = spans_of(t.min(tile));
                if t >= tile || overlaps(&spans) {
                    break spans;
                }
                t += align;
            }
        };
        // Linear ramps over each overlap (in output pixels), then normalised per pixel.
        let out_len = len * scale;
        let raw: Vec<Vec<f32>> = spans
            .iter()
            .enumerate()
            .map(|(i, &(start, n))| {
                let (lo, hi) = (start * scale, (start + n) * scale);
                let ramp_in = i
                    .checked_sub(1)
                    .map(|p| (spans[p].0 + spans[p].1) * scale - lo);
                let ramp_out = spans.get(i + 1).map(|next| hi - next.0 * scale);
                (lo..hi)
                    .map(|p| {
                        let mut w = 1.0f32;
                        if let Some(r) = ramp_in.filter(|&r| r > 0) {
                            w = w.min(((p - lo) as f32 + 0.5) / r as f32);
                        }
                        if let Some(r) = ramp_out.filter(|&r| r > 0) {
                            w = w.min(((hi - p) as f32 - 0.5) / r as f32);
                        }
                        w.max(1e-3)
                    })
                    .collect()
            })
            .collect();
        let mut total = vec![0.0f32; out_len];
        for (&(start, _), w) in spans.iter().zip(&raw) {
            for (k, v) in w.iter().enumerate() {
                total[start * scale + k] += v;
            }
        }
        let weights = spans
            .iter()
            .zip(raw)
            .map(|(&(start, _), w)| {
                w.into_iter()
                    .enumerate()
                    .map(|(k, v)| v / total[start * scale + k])
                    .collect()
            })
            .collect();
        Self { spans, weights }
    }
}

/// A tiled upscale of one image, driven tile by tile by the caller.
///
/// ```text
/// let mut job = TiledUpscale::new(model.config(), &image, &options, tiles)?;
/// for i in 0..job.len() {
///     let out = job.run(&model, &image, i, &device)?;  // launches the tile on the device
///     job.blend(i, out.into_data())?;                  // or into_data_async().await
/// }
/// let sr = job.finish();
/// ```
#[derive(Debug, Clone)]
pub struct TiledUpscale {
    options: NaosdOptions,
    rows: AxisPlan,
    cols: AxisPlan,
    /// The autoencoder's factor f: a tile at LR `(y, x)` has latent origin `(y s / f, x s / f)`.
    downsample: usize,
    output: HostImage,
    blended: Vec<bool>,
}

impl TiledUpscale {
    /// Plans the tiles of `image` and allocates the output.
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
        // Tile starts on multiples of `align` put every tile on the untiled image's latent
        // grid (integer noise origin) and UNet pooling grid.
        let m = config.size_multiple();
        let align = m / gcd(m, s);
        let overlap = tiles.overlap.min(tiles.tile.saturating_sub(1));
        let rows = AxisPlan::new(image.height, tiles.tile, overlap, align, s);
        let cols = AxisPlan::new(image.width, tiles.tile, overlap, align, s);
        let channels = image.channels;
        let (oh, ow) = (image.height * s, image.width * s);
        Ok(Self {
            options: options.clone(),
            downsample: config.downsample_factor(),
            blended: vec![false; rows.spans.len() * cols.spans.len()],
            rows,
            cols,
            output: HostImage {
                channels,
                height: oh,
                width: ow,
                data: vec![0.0; channels * oh * ow],
            },
        })
    }

    /// Number of tiles.
    pub fn len(&self) -> usize {
        self.blended.len()
    }

    /// Whether the plan has no tiles (never: an image has at least one).
    pub fn is_empty(&self) -> bool {
        self.blended.is_empty()
    }

    /// Tile `index` (row-major).
    ///
    /// # Panics
    /// When `index >= self.len()`.
    pub fn tile(&self, index: usize) -> Tile {
        let (row, col) = (index / self.cols.spans.len(), index % self.cols.spans.len());
        let (y, height) = self.rows.spans[row];
        let (x, width) = self.cols.spans[col];
        Tile {
            row,
            col,
            y,
            x,
            height,
            width,
        }
    }

    /// Launches tile `index` of `image` on the model's device; read the result back and pass
    /// it to [`Self::blend`].
    ///
    /// # Errors
    /// As [`Naosd::upscale_at`]; [`ModelError::InvalidInput`] for a bad index or an image
    /// other than the planned one.
    pub fn run<B: Backend>(
        &self,
        model: &Naosd<B>,
        image: &HostImage,
        index: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        if index >= self.len() {
            return Err(ModelError::InvalidInput(format!(
                "tile {index} of {}",
                self.len()
            )));
        }
        let s = self.options.scale;
        if image.height * s != self.output.height || image.width * s != self.output.width {
            return Err(ModelError::InvalidInput(
                "the image is not the one this tiling was planned for".into(),
            ));
        }
        let t = self.tile(index);
        let lr = image.crop_tensor::<B>((t.y, t.x, t.height, t.width), device);
        let f = self.downsample;
        model.upscale_at(lr, &self.options, (t.y * s / f, t.x * s / f))
    }

    /// Adds the upscaled tile `index` (`[1, C, h * s, w * s]`, as read back from
    /// [`Self::run`]) into the output with its blend weights.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for a bad index, a tile blended twice, data of the wrong
    /// shape, or a non-finite value (the model diverged: never hand out NaN pixels).
    pub fn blend(&mut self, index: usize, data: TensorData) -> Result<()> {
        if index >= self.len() || self.blended[index] {
            return Err(ModelError::InvalidInput(format!(
                "tile {index} is not pending"
            )));
        }
        let t = self.tile(index);
        let s = self.options.scale;
        let (th, tw) = (t.height * s, t.width * s);
        let c = self.output.channels;
        if data.shape.as_slice() != [1, c, th, tw] {
            return Err(ModelError::InvalidInput(format!(
                "tile {index} should be 1x{c}x{th}x{tw}, got {:?}",
                data.shape
            )));
        }
        let values = data
            .to_vec::<f32>()
            .map_err(|e| ModelError::InvalidInput(format!("tile {index}: {e:?}")))?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::InvalidInput(format!(
                "tile {index} contains NaN or infinite values"
            )));
        }
        let wy = &self.rows.weights[t.row];
        let wx = &self.cols.weights[t.col];
        let (oy, ox) = (t.y * s, t.x * s);
        let (oh, ow) = (self.output.height, self.output.width);
        for ch in 0..c {
            for r in 0..th {
                let src = &values[(ch * th + r) * tw..][..tw];
                let dst = &mut self.output.data[(ch * oh + oy + r) * ow + ox..][..tw];
                for ((d, v), w) in dst.iter_mut().zip(src).zip(wx) {
                    *d += v * wy[r] * w;
                }
            }
        }
        self.blended[index] = true;
        Ok(())
    }

    /// Number of tiles blended so far.
    pub fn done(&self) -> usize {
        self.blended.iter().filter(|&&b| b).count()
    }

    /// The blended output.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] while some tile has not been blended.
    pub fn finish(self) -> Result<HostImage> {
        if self.done() != self.len() {
            return Err(ModelError::InvalidInput(format!(
                "{} of {} tiles are missing",
                self.len() - self.done(),
                self.len()
            )));
        }
        let mut out = self.output;
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

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Upscales a host image tile by tile with blocking reads (native callers); `on_tile(done,
/// total)` is called after each tile.
///
/// # Errors
/// As [`TiledUpscale::new`], [`TiledUpscale::run`] and [`TiledUpscale::blend`].
pub fn upscale_tiled<B: Backend>(
    model: &Naosd<B>,
    image: &HostImage,
    options: &NaosdOptions,
    tiles: TileOptions,
    device: &B::Device,
    mut on_tile: impl FnMut(usize, usize),
) -> Result<HostImage> {
    let mut job = TiledUpscale::new(model.config(), image, options, tiles)?;
    for i in 0..job.len() {
        let out = job.run(model, image, i, device)?;
        job.blend(i, out.into_data())?;
        on_tile(i + 1, job.len());
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

    fn model() -> Naosd<TestBackend> {
        let m = ModelConfig::tiny().init::<TestBackend>(&device()).unwrap();
        randomise(m, |_| true, 0.05)
    }

    #[test]
    fn axis_plan_covers_every_pixel_with_weights_summing_to_one() {
        for (len, tile, overlap, align, scale) in [
            (100, 32, 8, 2, 4),
            (33, 32, 4, 1, 2),
            (7, 32, 4, 8, 4),
            (65, 16, 15, 8, 1),
        ] {
            let plan = AxisPlan::new(len, tile, overlap, align, scale);
            let mut sum = vec![0.0f32; len * scale];
            for (&(start, n), w) in plan.spans.iter().zip(&plan.weights) {
                assert_eq!(start % align, 0, "aligned start");
                assert_eq!(w.len(), n * scale);
                for (k, v) in w.iter().enumerate() {
                    assert!(*v > 0.0);
                    sum[start * scale + k] += v;
                }
            }
            assert_eq!(plan.spans.last().map(|s| s.0 + s.1), Some(len));
            for (p, s) in sum.iter().enumerate() {
                assert!((s - 1.0).abs() < 1e-5, "pixel {p} has weight {s}");
            }
        }
    }

    /// The planner uses the fewest tiles the tile size allows, all of one size, so the work
    /// (pixels computed, overlaps included) stays close to the image's own pixels.
    #[test]
    fn axis_plan_shares_the_length_among_the_fewest_tiles() {
        // base x4 with the native default tile: 2016x2016 output from 504x504 LR.
        let plan = AxisPlan::new(504, 256, 32, 8, 4);
        let lens: Vec<usize> = plan.spans.iter().map(|s| s.1).collect();
        assert_eq!(
            lens.len(),
            3,
            "two tiles of 256 cannot cover 504 with overlap"
        );
        assert!(lens.iter().all(|&n| n <= 200), "tiles {lens:?}");
        for w in plan.spans.windows(2) {
            assert!(
                w[0].0 + w[0].1 >= w[1].0 + 32,
                "overlap kept: {:?}",
                plan.spans
            );
        }
        let work: usize = lens.iter().sum();
        assert!(work <= 600, "{work} LR pixels computed for 504");
        // Whatever the length, the tiles never exceed the size asked for, their count is
        // the least that covers the length with `tile`-sized steps, and they overlap by at
        // least `overlap` where full tiles would.
        for len in 257..1200 {
            let plan = AxisPlan::new(len, 256, 32, 8, 4);
            let full = (len - 256).div_ceil(224) + 1;
            assert_eq!(plan.spans.len(), full, "len {len}");
            for (i, &(_, n)) in plan.spans.iter().enumerate() {
                let last = i + 1 == plan.spans.len();
                assert!(
                    n <= 256 + if last { 7 } else { 0 },
                    "len {len}: {:?}",
                    plan.spans
                );
            }
            for w in plan.spans.windows(2) {
                assert!(
                    w[0].0 + w[0].1 >= w[1].0 + 32,
                    "len {len}: {:?}",
                    plan.spans
                );
            }
        }
    }

    #[test]
    fn one_tile_equals_the_untiled_pipeline_exactly() {
        let model = model();
        let image = smooth_image(3, 13, 10);
        let options = NaosdOptions::default();
        let untiled = to_host(
            model
                .upscale(image.crop_tensor((0, 0, 13, 10), &device()), &options)
                .unwrap(),
        );
        let tiled = upscale_tiled(
            &model,
            &image,
            &options,
            TileOptions {
                tile: 64,
                overlap: 8,
            },
            &device(),
            |_, _| {},
        )
        .unwrap();
        assert_eq!(tiled, untiled);
    }

    /// Many tiles against one: the noise is shared through global coordinates, so only the
    /// network's context beyond the overlap differs, and the ramps blend that away.
    #[test]
    fn tiled_output_matches_the_untiled_output_closely() {
        let model = model();
        let image = smooth_image(3, 40, 48);
        let options = NaosdOptions::default();
        let untiled = to_host(
            model
                .upscale(image.crop_tensor((0, 0, 40, 48), &device()), &options)
                .unwrap(),
        );
        let mut calls = 0;
        let tiles = TileOptions {
            tile: 16,
            overlap: 8,
        };
        let tiled = upscale_tiled(&model, &image, &options, tiles, &device(), |_, _| {
            calls += 1
        })
        .unwrap();
        assert!(calls >= 9, "the image was really tiled ({calls} tiles)");
        let diffs: Vec<f32> = tiled
            .data
            .iter()
            .zip(&untiled.data)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        let max = diffs.iter().copied().fold(0.0, f32::max);
        assert!(mean < 2e-3 && max < 0.05, "mean {mean}, max {max}");
    }

    #[test]
    fn bad_requests_are_errors() {
        let config = ModelConfig::tiny();
        let opts = NaosdOptions::default();
        let t = TileOptions {
            tile: 16,
            overlap: 4,
        };
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
        let zero = TileOptions {
            tile: 0,
            overlap: 0,
        };
        assert!(TiledUpscale::new(&config, &smooth_image(3, 4, 4), &opts, zero).is_err());
        let mut job = TiledUpscale::new(&config, &smooth_image(3, 4, 4), &opts, t).unwrap();
        let nan = TensorData::new(vec![f32::NAN; 3 * 16 * 16], [1, 3, 16, 16]);
        assert!(job.blend(0, nan).is_err());
        assert!(job.clone().finish().is_err(), "unfinished job");
        let wrong = TensorData::new(vec![0.0f32; 3 * 8 * 8], [1, 3, 8, 8]);
        assert!(job.blend(0, wrong).is_err());
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
        let tight = TileOptions::for_device(&base, 4, 16 << 20);
        assert_eq!(roomy.tile, MAX_OUTPUT_TILE / 4);
        assert!(tight.tile < roomy.tile && tight.tile > 0);
        assert!(largest_activation_bytes(&base, tight.tile * 4, tight.tile * 4) <= 8 << 20);
        assert!(tight.overlap >= 1);
    }
}
