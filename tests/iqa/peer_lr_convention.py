"""Which LR the CNN peers' published weights expect (docs/quality.md, "The peers"): PSNR-Y of
bicubic and of FSRCNN, ESPCN and LapSRN (tests/iqa/peers.py's models) on one evaluation set,
with three x4 downscalings of the HR: OpenCV INTER_AREA, OpenCV INTER_CUBIC (no antialiasing:
aliased LR) and MATLAB-style antialiased bicubic (the SR literature's, the one `eval` makes;
read from a folder `trainer-native eval --save-lr` wrote). Bicubic here is OpenCV's x4
INTER_CUBIC upsampling of the same LR. PSNR-Y: BT.601 luma, 4 px border, as `eval`.

    .venv-iqa/bin/python tests/iqa/peer_lr_convention.py HR_DIR ANTIALIASED_LR_DIR
"""

import glob
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from peers import PEERS, SCALE, checked_model  # noqa: E402


def psnr_y(a, b, border=4):
    luma = lambda x: 16 + (65.481 * x[..., 2] + 128.553 * x[..., 1] + 24.966 * x[..., 0]) / 255.0
    d = (luma(a.astype(np.float64)) - luma(b.astype(np.float64)))[border:-border, border:-border]
    return 10 * np.log10(255.0**2 / np.mean(d**2))


def main():
    hr_dir, antialiased_dir = sys.argv[1:3]
    peers_dir = os.environ.get("GDPO_SR_PEERS_DIR", "../shared/peers")
    models = {}
    for name in PEERS:
        sr = cv2.dnn_superres.DnnSuperResImpl_create()
        sr.readModel(checked_model(peers_dir, name))
        sr.setModel(name, SCALE)
        models[name] = sr
    print("| LR made by | bicubic | " + " | ".join(models) + " |")
    print("|---|" + "---:|" * (1 + len(models)))
    for down in ("INTER_AREA", "INTER_CUBIC", "antialiased bicubic (eval)"):
        scores = {}
        for path in sorted(glob.glob(os.path.join(hr_dir, "*.png"))):
            hr = cv2.imread(path)
            h, w = (s // SCALE * SCALE for s in hr.shape[:2])
            hr = hr[:h, :w]
            if down.startswith("INTER"):
                lr = cv2.resize(hr, (w // SCALE, h // SCALE), interpolation=getattr(cv2, down))
            else:
                lr = cv2.imread(os.path.join(antialiased_dir, os.path.basename(path)))
            up = cv2.resize(lr, (w, h), interpolation=cv2.INTER_CUBIC)
            scores.setdefault("bicubic", []).append(psnr_y(up, hr))
            for name, sr in models.items():
                scores.setdefault(name, []).append(psnr_y(sr.upsample(lr), hr))
        print(f"| {down} | " + " | ".join(f"{np.mean(v):.2f}" for v in scores.values()) + " |")


if __name__ == "__main__":
    main()
