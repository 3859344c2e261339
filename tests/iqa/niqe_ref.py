"""NIQE (Mittal, Soundararajan and Bovik 2013) in numpy/scipy: the test-only reference of
trainer-native's native NIQE (trainer-native/src/iqa/niqe.rs).

Written for this project from the paper and the published protocol of BasicSR's
``calculate_niqe`` (the figure SR papers report), without its code: everything is float64 and
vectorised (a resampling matrix for the MATLAB-style resize, one boolean mask per AGGD fit),
while the Rust side loops in place; both must give the same number.

Protocol, step by step:

1. Luma ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` of the 8-bit RGB image (the
   BT.601 studio-range Y of MATLAB's rgb2ycbcr), rounded half-to-even to integers in [16, 235].
2. Crop to whole 96x96 blocks from the top-left corner.
3. Two scales: the image, then MATLAB's ``imresize(Y / 255, 0.5) * 255`` (bicubic, Keys
   a = -0.5, antialiased: the kernel is stretched by 2 and scaled by 0.5; 'symmetric' borders).
4. At each scale, MSCN ``(Y - mu) / (sigma + 1)`` with the shipped 7x7 window (convolution,
   replicated borders, ``sigma = sqrt(|E[Y^2] - mu^2|)``); differences below 1e-7 grey levels
   are treated as exact zeros so that flat areas do not pick a sign from rounding noise.
5. Per block (96x96 at full scale, 48x48 at half scale), 18 numbers: an AGGD fit of the MSCN
   (shape, mean of the two scales) and of the products with the block rolled (circularly) by
   (0,1), (1,0), (1,1), (1,-1) (shape, mean, left scale, right scale). A side with no samples
   gives NaN scales while the shape falls back to the first grid value 0.2 (numpy's argmin of
   NaNs), as in the reference protocol.
6. Mean over blocks ignoring NaNs per feature; covariance (n - 1) over the blocks without NaN
   (zero for a single block, MATLAB's convention); then
   ``sqrt((mu_p - mu_d)^T pinv((C_p + C_d) / 2) (mu_p - mu_d))``.

Usage: ``niqe_ref.py PARAMS.npz IMAGE.png...`` prints one JSON object per image.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from scipy import ndimage, special

BLOCK = 96
SHAPES = 0.2 + 0.001 * np.arange(9801)  # 0.2 ... 10.0
# Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)): the moment ratio an AGGD fit inverts.
RATIOS = special.gamma(2 / SHAPES) ** 2 / (special.gamma(1 / SHAPES) * special.gamma(3 / SHAPES))
FLAT = 1e-7


def luma(rgb8: np.ndarray) -> np.ndarray:
    """8-bit RGB (h, w, 3) -> rounded BT.601 Y in grey levels, float64."""
    rgb = rgb8.astype(np.float64)
    y = 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    return np.round(y)


def keys_cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    near = (1.5 * ax - 2.5) * ax * ax + 1.0
    far = ((-0.5 * ax + 2.5) * ax - 4.0) * ax + 2.0
    return np.where(ax <= 1, near, np.where(ax <= 2, far, 0.0))


def resize_matrix(n: int, scale: float) -> np.ndarray:
    """The (ceil(n * scale), n) matrix of MATLAB's antialiased bicubic imresize along one axis."""
    m = int(np.ceil(n * scale))
    support = 4.0 / scale if scale < 1 else 4.0
    out = np.zeros((m, n))
    centres = (np.arange(1, m + 1) / scale + 0.5 * (1 - 1 / scale))  # 1-based input positions
    for i, c in enumerate(centres):
        taps = np.floor(c - support / 2) + np.arange(int(np.ceil(support)) + 2)
        d = c - taps
        w = scale * keys_cubic(d * scale) if scale < 1 else keys_cubic(d)
        w = w / w.sum()
        j = taps.astype(np.int64) - 1  # 0-based, then mirrored ('symmetric')
        j = np.where(j < 0, -j - 1, j)
        j = np.where(j >= n, 2 * n - 1 - j, j)
        np.add.at(out[i], j, w)
    return out


def half(y: np.ndarray) -> np.ndarray:
    rows = resize_matrix(y.shape[0], 0.5)
    cols = resize_matrix(y.shape[1], 0.5)
    return (rows @ (y / 255.0) @ cols.T) * 255.0


def mscn(y: np.ndarray, window: np.ndarray) -> np.ndarray:
    mu = ndimage.convolve(y, window, mode="nearest")
    var = ndimage.convolve(y * y, window, mode="nearest") - mu * mu
    centred = y - mu
    centred[np.abs(centred) < FLAT] = 0.0
    return centred / (np.sqrt(np.abs(var)) + 1.0)


def aggd(x: np.ndarray) -> tuple[float, float, float]:
    """(shape, left scale, right scale) of an asymmetric generalised Gaussian, moment-matched."""
    x = x.ravel()
    neg, pos = x[x < 0], x[x > 0]
    left = np.sqrt(np.mean(neg * neg)) if neg.size else np.nan
    right = np.sqrt(np.mean(pos * pos)) if pos.size else np.nan
    g = left / right
    second = np.mean(x * x)
    r = np.mean(np.abs(x)) ** 2 / second if second > 0 else np.nan
    r_norm = r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    shape = SHAPES[0] if np.isnan(r_norm) else SHAPES[np.argmin((RATIOS - r_norm) ** 2)]
    k = np.sqrt(special.gamma(1 / shape) / special.gamma(3 / shape))
    return shape, left * k, right * k


def block_features(b: np.ndarray) -> list[float]:
    shape, bl, br = aggd(b)
    feats = [shape, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        shape, bl, br = aggd(b * np.roll(b, shift, axis=(0, 1)))
        mean = (br - bl) * special.gamma(2 / shape) / special.gamma(1 / shape)
        feats += [shape, mean, bl, br]
    return feats


def niqe(y: np.ndarray, mu_p: np.ndarray, cov_p: np.ndarray, window: np.ndarray) -> float:
    nh, nw = y.shape[0] // BLOCK, y.shape[1] // BLOCK
    if nh == 0 or nw == 0:
        raise ValueError(f"NIQE needs at least {BLOCK}x{BLOCK} pixels, got {y.shape[1]}x{y.shape[0]}")
    y = y[: nh * BLOCK, : nw * BLOCK]
    scales = []
    for s in (1, 2):
        m = mscn(y, window)
        size = BLOCK // s
        scales.append(
            [block_features(m[i * size : (i + 1) * size, j * size : (j + 1) * size]) for i in range(nh) for j in range(nw)]
        )
        if s == 1:
            y = half(y)
    feats = np.concatenate([np.array(f) for f in scales], axis=1)
    mu_d = np.nanmean(feats, axis=0)
    clean = feats[~np.isnan(feats).any(axis=1)]
    if clean.shape[0] == 0 or np.isnan(mu_d).any():
        raise ValueError("no block with finite NIQE features (a flat image?)")
    cov_d = np.cov(clean, rowvar=False) if clean.shape[0] > 1 else np.zeros_like(cov_p)
    d = mu_p - mu_d
    return float(np.sqrt(d @ np.linalg.pinv((cov_p + cov_d) / 2) @ d))


def load_params(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.load(path)
    return p["mu_pris_param"].ravel(), p["cov_pris_param"], p["gaussian_window"]


def read_rgb8(path: str) -> np.ndarray:
    import cv2  # only for reading PNGs

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read {path}")
    return bgr[..., ::-1]


def main(argv: list[str]) -> int:
    np.seterr(all="ignore")
    mu_p, cov_p, window = load_params(argv[0])
    for path in argv[1:]:
        print(json.dumps({"file": path, "niqe": niqe(luma(read_rgb8(path)), mu_p, cov_p, window)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
