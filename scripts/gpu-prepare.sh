#!/usr/bin/env bash
# Prepares a call of scripts/gpu-session.sh on a lent GPU machine (docs/gpu.md): the device
# has no Rust toolchain, reaches no network and takes at most 64 MiB of working tree, so the
# release binary (CUDA is a default feature; it needs no CUDA toolkit to build) travels
# xz-compressed, and the training images as JPEG (quality 95, no chroma subsampling: 21 MB
# instead of 66) with Set5 and Set14 unchanged for validation, and the TAEF2 autoencoder the
# shipped model is composed with (SHA-256 checked again where it is read). Everything goes to
# .devdata/, which git ignores (.git/info/exclude) and the device call names in `carry`:
# third-party files never enter the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}

grep -qx '/.devdata/' .git/info/exclude 2>/dev/null || {
    mkdir -p .git/info
    echo '/.devdata/' >>.git/info/exclude
}
cargo build --release -p trainer-native
mkdir -p .devdata
xz -6 -T0 -c target/release/trainer-native >.devdata/trainer-native.xz

if [ ! -d .devdata/train ]; then
    # Pillow only for this conversion, in a throwaway folder (not a project dependency).
    python3 -m pip install -q --target target/pillow pillow
    PYTHONPATH=target/pillow python3 - "$DATA" <<'EOF'
import os, shutil, sys
from PIL import Image
src = sys.argv[1]
for root, _, files in os.walk(os.path.join(src, "train")):
    out = os.path.join(".devdata", os.path.relpath(root, src))
    os.makedirs(out, exist_ok=True)
    for f in sorted(files):
        if f.lower().endswith((".png", ".bmp", ".jpg", ".jpeg", ".webp")):
            im = Image.open(os.path.join(root, f)).convert("RGB")
            im.save(os.path.join(out, os.path.splitext(f)[0] + ".jpg"), quality=95, subsampling=0)
for s in ("Set5", "Set14"):
    shutil.copytree(os.path.join(src, "eval", s), f".devdata/eval/{s}", dirs_exist_ok=True)
EOF
fi
mkdir -p .devdata/taef2
cp "${GDPO_SR_TAEF2_DIR:-../shared/weights/taef2}"/taef2_*.pth .devdata/taef2/
du -sh .devdata
