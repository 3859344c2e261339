#!/usr/bin/env bash
# Runs every test of the project on a fresh machine (the README's test command; .ci/run calls it).
# One target dir, one native build (which includes the CUDA backend, compiled but only run
# where a GPU exists), then the wasm32 build of the browser-side crates.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

export CARGO_TERM_COLOR=never
# Native: every crate, every test. trainer-native's default `cuda` feature is on, so the CUDA
# backend always compiles (it runs only where a GPU exists). The binaries first (same profile
# and features, so nothing is compiled twice): the end-to-end tests drive the real CLI.
cargo build --workspace --bins
cargo test --workspace

# Browser: the model crate (and the web crate on top of it) must build for wasm32.
cargo build -p model -p web --target wasm32-unknown-unknown
echo "wasm32 build of model and web: ok"
