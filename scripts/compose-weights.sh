#!/usr/bin/env bash
# Composes the page's default weight file, www/weights/default.safetensors (not committed),
# from what the project trained and committed (weights/taef2-unet.safetensors, the UNet) and
# the pretrained TAEF2 autoencoder in ../shared/weights/taef2 (third-party data, MIT: never
# committed, in any form). trainer-native checks the TAEF2 files' SHA-256 and names the
# missing path when they are absent. Needs the native binary (target/debug/trainer-native;
# built here when missing).
#
#   compose-weights.sh           the shipped model (fails, naming the path, without TAEF2)
#   compose-weights.sh --or-tiny without TAEF2, a random `tiny` miniature instead, with a
#                                warning (scripts/test.sh on machines without ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug/trainer-native
[ -x "$bin" ] || cargo build -p trainer-native --bin trainer-native
out=www/weights/default.safetensors
mkdir -p www/weights
taef2=${GDPO_SR_TAEF2_DIR:-../shared/weights/taef2}
if [ "${1:-}" = --or-tiny ] && [ ! -d "$taef2" ]; then
    echo "compose-weights: $taef2 is absent: the page gets a random tiny miniature (tests only)" >&2
    "$bin" init --preset tiny --out "$out"
    exit 0
fi
# The shipped file is a detail range (two UNets); the web file keeps it, so the page and the
# npm package have the detail knob.
"$bin" export --weights weights/taef2-unet.safetensors --out "$out"
