#!/usr/bin/env bash
# Creates .venv-iqa/ at the repository root with the pinned image-quality references of
# tests/iqa/requirements.txt (numpy, scipy, opencv-contrib-python-headless: ~110 MB of
# wheels, ~400 MB installed), from pypi.org only. Idempotent: does nothing when the venv
# already holds exactly these requirements. PYTHON picks the interpreter (>= 3.10; default
# python3).
#
# The venv is used by the native IQA contract tests (tests/tests/contracts/iqa.rs), which
# skip with a message when it is absent.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=$root/.venv-iqa
requirements=$root/tests/iqa/requirements.txt
stamp=$venv/.requirements-installed
python=${PYTHON:-python3}

if [[ -f $stamp ]] && cmp -s "$stamp" "$requirements" && [[ -x $venv/bin/python ]]; then
    echo "setup-venv: $venv is up to date"
    exit 0
fi
if [[ ! -x $venv/bin/python ]]; then
    "$python" -m venv "$venv"
fi
# Keeps the venv out of git whatever the repository's .gitignore says.
echo '*' >"$venv/.gitignore"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
"$venv/bin/python" - <<'PY'
import cv2, numpy, scipy
assert hasattr(cv2, "quality"), "cv2.quality missing: not the contrib build"
img = (numpy.arange(64 * 64) % 251).astype(numpy.uint8).reshape(64, 64)
assert cv2.resize(img, (32, 32), interpolation=cv2.INTER_CUBIC).shape == (32, 32)
print(f"setup-venv: numpy {numpy.__version__}, scipy {scipy.__version__}, opencv {cv2.__version__}")
PY
cp "$requirements" "$stamp"
