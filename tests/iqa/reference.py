"""Reference scores of PNG images for trainer-native's native NIQE and BRISQUE
(tests/tests/contracts/iqa.rs runs it with the .venv-iqa interpreter).

    reference.py MODEL_DIR IMAGE.png...

prints one JSON object per image:

- ``niqe``: the independent numpy NIQE of niqe_ref.py (the pristine model of MODEL_DIR);
- ``brisque``: OpenCV contrib's ``cv2.quality.QualityBRISQUE_compute`` with the LIVE model of
  MODEL_DIR, as the PyPI wheel runs it by default (Intel IPP on);
- ``brisque_portable``: the same with IPP switched off (``cv2.ipp.setUseIPP(False)``), i.e.
  OpenCV's portable code, whose arithmetic the native implementation reproduces.

A value that cannot be computed (too small, flat, NaN) is ``null``.
"""

from __future__ import annotations

import json
import math
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import niqe_ref  # noqa: E402


def finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def brisque(bgr: np.ndarray, model_dir: str, ipp: bool) -> float | None:
    cv2.ipp.setUseIPP(ipp)
    try:
        model = os.path.join(model_dir, "brisque_model_live.yml")
        ranges = os.path.join(model_dir, "brisque_range_live.yml")
        return finite_or_none(float(cv2.quality.QualityBRISQUE_compute(bgr, model, ranges)[0]))
    except cv2.error:
        return None
    finally:
        cv2.ipp.setUseIPP(True)


def main(argv: list[str]) -> int:
    np.seterr(all="ignore")
    model_dir = argv[0]
    mu_p, cov_p, window = niqe_ref.load_params(os.path.join(model_dir, "niqe_pris_params.npz"))
    for path in argv[1:]:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read {path}")
        try:
            niqe = finite_or_none(niqe_ref.niqe(niqe_ref.luma(bgr[..., ::-1]), mu_p, cov_p, window))
        except ValueError:
            niqe = None
        row = {
            "file": path,
            "niqe": niqe,
            "brisque": brisque(bgr, model_dir, ipp=True),
            "brisque_portable": brisque(bgr, model_dir, ipp=False),
        }
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
