#!/usr/bin/env bash
# Runs every test of the project on a fresh machine (the README's test command; .ci/run calls it).
# One target dir, one native build (which includes the CUDA backend, compiled but only run
# where a GPU exists), then the wasm32 build of the browser-side crates.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

export CARGO_TERM_COLOR=never
# Native: every crate, every test, with the `cuda` feature so the CUDA path always compiles.
# The binaries first (same profile and features, so nothing is compiled twice): the
# end-to-end tests in tests/ drive the real `trainer-native` CLI.
cargo build --workspace --bins --features trainer-native/cuda
cargo test --workspace --features trainer-native/cuda

# Browser: the model crate (and the web crate on top of it) must build for wasm32.
cargo build -p model -p web --target wasm32-unknown-unknown
echo "wasm32 build of model and web: ok"
