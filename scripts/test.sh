#!/usr/bin/env bash
# Runs every test of the project on a fresh machine (the README's test command; .ci/run calls it):
# the native tests (every crate; the build includes the CUDA backend, compiled but only run
# where a GPU exists), then the page (trunk) and the npm package from one release wasm32 build,
# then the real-browser tests against both (tests/browser).
#
# Three compilations share the machine: the native dev build (target/), the wasm32 release
# build (target/wasm, scripts/build-wasm.sh) and the web tools (wasm-bindgen-cli, trunk,
# scripts/setup.sh tools). The last two run in the background beside the first: the native
# build leaves a core idle for minutes while its largest crates compile one at a time
# (docs/architecture.md, "Tests and CI", has the measured timeline).
set -euo pipefail
set -m # every background job gets its own process group, so that it can be stopped whole
cd "$(dirname "$0")/.."

./scripts/setup.sh packages # downloads only: the wasm32 target, Debian and npm packages

mkdir -p target
jobs_pids=()
jobs_logs=()
background() { # NAME COMMAND...: run COMMAND in the background, output into target/NAME.log
    local log="target/$1.log"
    shift
    "$@" >"$log" 2>&1 &
    jobs_pids+=("$!")
    jobs_logs+=("$log")
}
stop_background() {
    local pid
    for pid in "${jobs_pids[@]}"; do
        kill -- "-$pid" 2>/dev/null || true
    done
}
await_background() {
    local i
    for i in "${!jobs_pids[@]}"; do
        if ! wait "${jobs_pids[$i]}"; then
            cat "${jobs_logs[$i]}" >&2
            echo "background step failed; its log (${jobs_logs[$i]}) is above" >&2
            exit 1
        fi
    done
    jobs_pids=()
}
trap stop_background EXIT

background setup-tools ./scripts/setup.sh tools
background build-wasm ./scripts/build-wasm.sh
# The PyTorch venv (6.2 GB from PyPI, mostly download time, while the two jobs above compile):
# the native build's `tch` feature links its LibTorch (burn-tch), and the TAEF2 parity test
# (tests/tests/contracts/taef2.rs) checks the burn autoencoder against its PyTorch.
./tests/pytorch/setup-venv.sh

export CARGO_TERM_COLOR=never
# Native: every crate, every test. One `cargo build` of the binaries *and* the test targets:
# with the test targets the dev-dependencies (criterion, proptest) take part in feature
# resolution, and they turn on features of shared crates (either's `use_std`, which rayon
# depends on). Building the binaries alone first would resolve other features and compile
# burn, cubecl and burn-flex a second time for `cargo test` (measured: 25 min on 2 cores).
# With the LibTorch backend (the trainer's default CPU backend when built) and its tests.
features=(--features trainer-native/tch,integration-tests/tch)
cargo build --workspace --bins --tests "${features[@]}"
# The background jobs end before the native build in practice (docs/architecture.md).
await_background
# The crates' own test executables (model's, trainer-native's) link LibTorch too, through
# the unified burn features, but only trainer-native's and the tests crate's carry its rpath
# (trainer-native/build.rs): the loader finds it for the others here.
LD_LIBRARY_PATH="$PWD/.venv-bench/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    cargo test --workspace "${features[@]}"

./scripts/compose-weights.sh --or-tiny
./scripts/build-web.sh
./scripts/build-npm.sh
(cd tests/browser && npm test)
echo "all tests passed"
