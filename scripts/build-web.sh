#!/usr/bin/env bash
# Builds the page (www/) with trunk into target/www: the web crate for wasm32 in release mode,
# wasm-bindgen'ed as an ES module for the worker, plus the page's static files and weights.
set -euo pipefail
cd "$(dirname "$0")/../www"
if [ ! -f weights/default.safetensors ]; then
    echo "www/weights/default.safetensors is missing: scripts/compose-weights.sh composes it" >&2
    exit 1
fi
# The same target dir as build-npm.sh (scripts/build-wasm.sh), so both share one wasm build.
. ../scripts/build-wasm.sh env
trunk build --release
echo "built the page into target/www ($(du -h ../target/www/web_bg.wasm | cut -f1) wasm)"
