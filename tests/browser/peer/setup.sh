#!/usr/bin/env bash
# Installs the peer upscaler for tests/browser/bench-peer.mjs (UpscalerJS, its ESRGAN models,
# TensorFlow.js) from the npm registry at the versions pinned in package-lock.json. Only the
# benchmark needs it; npm test in tests/browser does not. Skips the install when up to date.
set -euo pipefail
cd "$(dirname "$0")"
if [ node_modules/.package-lock.json -nt package-lock.json ] && [ -d node_modules/upscaler ]; then
    exit 0
fi
npm ci --no-audit --no-fund
