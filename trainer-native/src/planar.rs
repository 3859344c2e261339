//! `Planar`: an RGB image as three f32 planes, the in-memory image type of the data pipeline.
//!
//! Channel-major (`[c][y][x]`), values nominally in [0, 1]: the same layout as a
//! `[3, h, w]` tensor, so batching is a copy, and the degradation operates on plain data.

use image::RgbImage;

/// An RGB image as three planes of f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Planar {
    pub width: usize,
    pub height: usize,
    /// `3 * height * width` values, channel-major.
    pub data: Vec<f32>,
}

impl Planar {
    /// A black image.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0.0; 3 * width * height],
        }
    }

    /// The value of channel `c` at `(x, y)`.
    pub fn get(&self, c: usize, x: usize, y: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// Mutable access to channel `c` at `(x, y)`.
    pub fn get_mut(&mut self, c: usize, x: usize, y: usize) -> &mut f32 {
        &mut self.data[(c * self.height + y) * self.width + x]
    }

    /// One channel plane.
    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.width * self.height;
        &self.data[c * n..(c + 1) * n]
    }

    /// 8-bit RGB to [0, 1].
    pub fn from_rgb8(img: &RgbImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut out = Self::zeros(w, h);
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                out.data[c * w * h + i] = px[c] as f32 / 255.0;
            }
        }
        out
    }

    /// [0, 1] to 8-bit RGB (clamped, rounded).
    pub fn to_rgb8(&self) -> RgbImage {
        let (w, h) = (self.width, self.height);
        RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let i = y as usize * w + x as usize;
            image::Rgb(
                [0, 1, 2].map(|c| (self.data[c * w * h + i].clamp(0.0, 1.0) * 255.0).round() as u8),
            )
        })
    }

    /// The `width x height` window at `(x0, y0)`.
    ///
    /// # Panics
    /// When the window is not inside the image.
    pub fn crop(&self, x0: usize, y0: usize, width: usize, height: usize) -> Self {
        assert!(
            x0 + width <= self.width && y0 + height <= self.height,
            "crop outside the image"
        );
        let mut out = Self::zeros(width, height);
        for c in 0..3 {
            for y in 0..height {
                let src = (c * self.height + y0 + y) * self.width + x0;
                let dst = (c * height + y) * width;
                out.data[dst..dst + width].copy_from_slice(&self.data[src..src + width]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb8_round_trip_and_crop() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([(x * 50) as u8, (y * 60) as u8, 7]));
        let p = Planar::from_rgb8(&img);
        assert_eq!(p.to_rgb8(), img);
        assert_eq!(p.get(0, 3, 2), 150.0 / 255.0);
        let c = p.crop(1, 2, 3, 2);
        assert_eq!((c.width, c.height), (3, 2));
        assert_eq!(c.get(1, 0, 1), p.get(1, 1, 3));
    }
}
