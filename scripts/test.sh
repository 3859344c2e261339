#!/usr/bin/env bash
# Runs every test of the project on a fresh machine (the README's test command; .ci/run calls it).
# One target dir: one native build (which includes the CUDA backend, compiled but only run
# where a GPU exists), then one release wasm32 build shared by the page and the npm package,
# then the real-browser tests against the built page and package.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

export CARGO_TERM_COLOR=never
# Native: every crate, every test. The binaries first (same profile and features, so nothing
# is compiled twice): the end-to-end tests drive the real CLI.
cargo build --workspace --bins
cargo test --workspace

# Browser: the page (trunk) and the npm package from the same release wasm32 build, then
# headless Chromium against both (tests/browser).
./scripts/build-web.sh
./scripts/build-npm.sh
(cd tests/browser && npm test)
echo "all tests passed"
