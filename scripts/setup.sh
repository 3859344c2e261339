#!/usr/bin/env bash
# Installs what a fresh machine (Rust toolchain, Node/npm, Python only) lacks for building and
# testing GDPO-SR. Idempotent: every step checks first and does nothing when already done.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

# The wasm32 target: the model crate and the web crate are built for the browser.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding rustup target wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
fi

# Debian packages: Mesa's lavapipe Vulkan driver runs burn-wgpu headless on the CPU, so the
# wgpu code path (the one the browser uses) is tested without a GPU.
apt_packages=(mesa-vulkan-drivers libvulkan1)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
log "ready"
