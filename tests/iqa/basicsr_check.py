"""One-off check of niqe_ref.py against BasicSR's own ``calculate_niqe`` (not run by the tests:
it needs PyTorch, which BasicSR's resize uses).

    .venv-iqa/bin/pip download basicsr==1.4.2 --no-deps -d /tmp/bsr && tar xzf /tmp/bsr/*.tar.gz -C /tmp/bsr
    .venv-iqa/bin/python tests/iqa/basicsr_check.py /tmp/bsr/basicsr-1.4.2 \\
        .venv-bench/lib/python3.11/site-packages ../shared/data/eval/*/*.png

BASICSR_DIR is the unpacked sdist; TORCH_SITE a site-packages holding torch (the benchmark
venv's). BasicSR's package ``__init__`` imports its whole training stack, so only the four
modules NIQE needs are loaded, from their files, under stub parent packages. Prints the mean
and max absolute difference over the images.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types


def load_module(name: str, path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def basicsr_niqe(root: str) -> types.ModuleType:
    import scipy.ndimage

    for pkg in ("basicsr", "basicsr.utils", "basicsr.metrics"):
        sys.modules[pkg] = types.ModuleType(pkg)
    sys.modules["scipy.ndimage.filters"] = scipy.ndimage  # removed alias BasicSR 1.4 imports
    color = load_module("basicsr.utils.color_util", os.path.join(root, "basicsr/utils/color_util.py"))
    sys.modules["basicsr.utils"].bgr2ycbcr = color.bgr2ycbcr
    load_module("basicsr.utils.matlab_functions", os.path.join(root, "basicsr/utils/matlab_functions.py"))
    registry = types.ModuleType("basicsr.utils.registry")

    class Registry:
        def register(self):
            return lambda f: f

    registry.METRIC_REGISTRY = Registry()
    sys.modules["basicsr.utils.registry"] = registry
    load_module("basicsr.metrics.metric_util", os.path.join(root, "basicsr/metrics/metric_util.py"))
    return load_module("basicsr.metrics.niqe", os.path.join(root, "basicsr/metrics/niqe.py"))


def main(argv: list[str]) -> int:
    root, torch_site, images = argv[0], argv[1], argv[2:]
    sys.path.append(torch_site)
    import cv2
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import niqe_ref

    np.seterr(all="ignore")
    theirs = basicsr_niqe(root)
    params = niqe_ref.load_params(os.path.join(root, "basicsr/metrics/niqe_pris_params.npz"))
    diffs = []
    for path in images:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        a = float(theirs.calculate_niqe(bgr, 0, input_order="HWC", convert_to="y"))
        b = niqe_ref.niqe(niqe_ref.luma(bgr[..., ::-1]), *params)
        diffs.append(abs(a - b))
    print(f"{len(diffs)} images: mean |BasicSR - niqe_ref| {np.mean(diffs):.2e}, max {np.max(diffs):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
