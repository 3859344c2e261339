#!/usr/bin/env bash
# Installs what a fresh machine (Rust toolchain, Node/npm and Python only) lacks for building,
# serving and testing GDPO-SR. Idempotent: every step checks first and does nothing when done.
# Nothing downloads prebuilt tools: they are built by cargo; packages come from Debian, npm and
# (the test-only image-quality references) PyPI.
#
#   setup.sh           everything
#   setup.sh packages  the wasm32 target, Debian, npm and PyPI (tests/iqa) packages (downloads,
#                      no compiling)
#   setup.sh tools     wasm-bindgen-cli and trunk, compiled from source (minutes of CPU:
#                      scripts/test.sh runs this part beside the native build)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

packages() {
    # The wasm32 target: the model crate and the web crate are built for the browser.
    if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
        log "adding rustup target wasm32-unknown-unknown"
        rustup target add wasm32-unknown-unknown
    fi

    # Debian packages: Mesa's lavapipe Vulkan driver runs burn-wgpu headless on the CPU, so
    # the wgpu code path is tested without a GPU; Chromium runs the page in the browser tests.
    local apt_packages=(mesa-vulkan-drivers libvulkan1 chromium) missing=() p
    for p in "${apt_packages[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi

    # The image-quality references of the native NIQE/BRISQUE tests (tests/iqa/README.md):
    # numpy, scipy and opencv-contrib-python-headless from PyPI into .venv-iqa (~110 MB of
    # wheels, ~400 MB installed; a no-op when up to date).
    tests/iqa/setup-venv.sh >&2

    # playwright-core (the browser driver; it uses Debian's Chromium, never downloads one).
    if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.installed-lock 2>/dev/null; then
        log "installing the browser-test npm packages"
        (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error &&
            cp package-lock.json node_modules/.installed-lock)
    fi
}

# `cargo install` with a quick release profile: no LTO, many codegen units, no debug info, and
# the optimisation level given first (trunk's own profile asks for fat LTO with one codegen
# unit, which triples its build time on 2 cores).
tool_install() {
    local opt_level=$1
    shift
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        CARGO_PROFILE_RELEASE_OPT_LEVEL="$opt_level" CARGO_PROFILE_RELEASE_DEBUG=false \
        cargo install --force "$@"
}

tools() {
    # wasm-bindgen-cli must match the wasm-bindgen library in Cargo.lock exactly. Optimised a
    # little: it rewrites the multi-megabyte wasm module on every web build.
    local bindgen_version
    bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
    if [ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen ${bindgen_version}" ]; then
        log "building wasm-bindgen-cli ${bindgen_version}"
        tool_install 1 wasm-bindgen-cli --version "${bindgen_version}"
    fi

    # trunk builds the page; without default features it has no TLS stack (it never
    # downloads: www/Trunk.toml sets offline = true and uses the wasm-bindgen above). Not
    # optimised: it only runs cargo and wasm-bindgen and copies files.
    if [ "$(trunk --version 2>/dev/null || true)" != "trunk 0.21.14" ]; then
        log "building trunk 0.21.14"
        tool_install 0 trunk --version 0.21.14 --locked --no-default-features
    fi
}

case "${1:-all}" in
all) packages && tools ;;
packages) packages ;;
tools) tools ;;
*)
    echo "usage: $0 [all|packages|tools]" >&2
    exit 2
    ;;
esac
log "ready (${1:-all})"
