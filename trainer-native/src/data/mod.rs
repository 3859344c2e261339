//! Training data: a folder of high-resolution images, random crops and flips, batches that are
//! a pure function of `(seed, step)`, and a background thread that prepares the next batches
//! while the device computes.
//!
//! Deriving each batch from `(seed, step)` instead of a running RNG means the only "RNG state"
//! a checkpoint needs is the step, and a resumed run sees exactly the batches an uninterrupted
//! run would have seen.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread::JoinHandle,
};

use anyhow::Context;
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::planar::Planar;

/// Image extensions the dataset reads (decoding is by content).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "webp", "gif"];

/// Image files under `root` (recursively), sorted for a stable order.
pub fn list_images(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A seeded RNG for item `index` of the batch at `step` (independent streams).
pub fn item_rng(seed: u64, step: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step.wrapping_mul(0x1_0000).wrapping_add(index));
    rng
}

/// Decoded training images held in memory (8-bit, so 291 images of ~480x320 take ~45 MB).
#[derive(Debug, Clone)]
pub struct ImageFolder {
    images: Arc<Vec<RgbImage>>,
}

impl ImageFolder {
    /// Decodes every image under `root` (in parallel) whose sides are at least `min_side`;
    /// smaller images are skipped with a log line.
    ///
    /// # Errors
    /// When the folder cannot be read, an image cannot be decoded (the error names the file),
    /// or no usable image remains.
    pub fn load(root: &Path, min_side: usize) -> anyhow::Result<Self> {
        let paths = list_images(root)?;
        let decoded: Vec<RgbImage> = paths
            .par_iter()
            .map(|p| crate::image_io::decode_rgb8(p))
            .collect::<anyhow::Result<_>>()?;
        let total = decoded.len();
        let images: Vec<RgbImage> = decoded
            .into_iter()
            .filter(|img| img.width() as usize >= min_side && img.height() as usize >= min_side)
            .collect();
        if images.len() < total {
            tracing::info!(
                "{}: skipped {} images smaller than {min_side} px",
                root.display(),
                total - images.len()
            );
        }
        anyhow::ensure!(
            !images.is_empty(),
            "{}: no image of at least {min_side}x{min_side} px",
            root.display()
        );
        Ok(Self {
            images: Arc::new(images),
        })
    }

    /// An in-memory dataset (tests, generated data).
    pub fn from_images(images: Vec<RgbImage>) -> Self {
        Self {
            images: Arc::new(images),
        }
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    pub fn image(&self, index: usize) -> &RgbImage {
        &self.images[index]
    }

    /// A random `crop x crop` window of a random image, randomly flipped and transposed
    /// (the 8 symmetries of the square), as BasicSR's `augment`.
    pub fn random_crop(&self, crop: usize, rng: &mut impl Rng) -> Planar {
        let img = &self.images[rng.random_range(0..self.images.len())];
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (x0, y0) = (
            rng.random_range(0..=w - crop),
            rng.random_range(0..=h - crop),
        );
        let (hflip, vflip, transpose) = (
            rng.random_bool(0.5),
            rng.random_bool(0.5),
            rng.random_bool(0.5),
        );
        let mut out = Planar::zeros(crop, crop);
        for y in 0..crop {
            for x in 0..crop {
                let (mut sx, mut sy) = if transpose { (y, x) } else { (x, y) };
                if hflip {
                    sx = crop - 1 - sx;
                }
                if vflip {
                    sy = crop - 1 - sy;
                }
                let px = img.get_pixel((x0 + sx) as u32, (y0 + sy) as u32);
                for c in 0..3 {
                    *out.get_mut(c, x, y) = px[c] as f32 / 255.0;
                }
            }
        }
        out
    }
}

/// A batch as host data: `count` images of `channels x height x width`, values in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    pub step: usize,
    pub count: usize,
    pub height: usize,
    pub width: usize,
    /// Batch-major, then channel-major.
    pub data: Vec<f32>,
}

impl HostBatch {
    /// Stacks images (all the same size) into `[-1, 1]` batch data.
    ///
    /// # Panics
    /// When the images differ in size or the list is empty.
    pub fn stack(step: usize, images: &[Planar]) -> Self {
        let (width, height) = (images[0].width, images[0].height);
        let mut data = Vec::with_capacity(images.len() * 3 * width * height);
        for img in images {
            assert!(
                img.width == width && img.height == height,
                "batch images differ in size"
            );
            data.extend(img.data.iter().map(|v| v * 2.0 - 1.0));
        }
        Self {
            step,
            count: images.len(),
            height,
            width,
            data,
        }
    }

    /// The batch as a `[count, 3, height, width]` tensor.
    pub fn to_tensor<B: burn::tensor::backend::Backend>(
        &self,
        device: &B::Device,
    ) -> burn::tensor::Tensor<B, 4> {
        let shape = [self.count, 3, self.height, self.width];
        burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(self.data.clone(), shape),
            device,
        )
    }
}

/// Prepares batches for steps `start..end` on a background thread, `depth` ahead.
pub struct Prefetcher<T: Send + 'static> {
    receiver: Receiver<anyhow::Result<T>>,
    _worker: JoinHandle<()>,
}

impl<T: Send + 'static> Prefetcher<T> {
    /// `make(step)` builds the batch of one step (it may use rayon inside).
    pub fn new(
        start: usize,
        end: usize,
        depth: usize,
        make: impl Fn(usize) -> anyhow::Result<T> + Send + 'static,
    ) -> Self {
        let (sender, receiver): (SyncSender<_>, _) = sync_channel(depth.max(1));
        let worker = std::thread::spawn(move || {
            for step in start..end {
                if sender.send(make(step)).is_err() {
                    break; // the trainer stopped listening
                }
            }
        });
        Self {
            receiver,
            _worker: worker,
        }
    }

    /// The next batch, in step order.
    ///
    /// # Errors
    /// When the producer failed or finished early.
    pub fn next_batch(&self) -> anyhow::Result<T> {
        self.receiver.recv().context("the data loader stopped")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> ImageFolder {
        ImageFolder::from_images(vec![
            RgbImage::from_fn(20, 12, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7])),
            RgbImage::from_fn(16, 16, |x, y| image::Rgb([(x * y) as u8, 3, 200])),
        ])
    }

    #[test]
    fn crops_are_deterministic_per_step_and_item() {
        let f = folder();
        let a = f.random_crop(8, &mut item_rng(1, 5, 0));
        let b = f.random_crop(8, &mut item_rng(1, 5, 0));
        let c = f.random_crop(8, &mut item_rng(1, 5, 1));
        let d = f.random_crop(8, &mut item_rng(1, 6, 0));
        assert_eq!(a, b);
        assert!(a != c || a != d, "other items/steps should differ");
        assert_eq!((a.width, a.height), (8, 8));
    }

    #[test]
    fn crops_hold_pixels_of_the_source() {
        // A constant image: every crop of it is that constant, whatever the flips.
        let f =
            ImageFolder::from_images(vec![RgbImage::from_pixel(9, 9, image::Rgb([255, 0, 51]))]);
        let c = f.random_crop(4, &mut item_rng(0, 0, 0));
        assert!(c.plane(0).iter().all(|&v| v == 1.0));
        assert!(c.plane(2).iter().all(|&v| (v - 0.2).abs() < 1e-6));
    }

    #[test]
    fn prefetcher_yields_steps_in_order() {
        let p = Prefetcher::new(3, 7, 2, |s| Ok(s * 10));
        let got: Vec<usize> = (0..4).map(|_| p.next_batch().unwrap()).collect();
        assert_eq!(got, vec![30, 40, 50, 60]);
        assert!(p.next_batch().is_err());
    }

    #[test]
    fn stack_maps_to_minus_one_one() {
        let img = Planar {
            width: 1,
            height: 1,
            data: vec![0.0, 0.5, 1.0],
        };
        let b = HostBatch::stack(0, &[img.clone(), img]);
        assert_eq!(b.data, vec![-1.0, 0.0, 1.0, -1.0, 0.0, 1.0]);
    }

    #[test]
    fn listing_skips_non_images() {
        let dir = std::env::temp_dir().join(format!("gdpo-list-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        RgbImage::new(4, 4).save(dir.join("a.png")).unwrap();
        RgbImage::new(4, 4).save(dir.join("sub/b.PNG")).unwrap();
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        let files = list_images(&dir).unwrap();
        assert_eq!(files.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
