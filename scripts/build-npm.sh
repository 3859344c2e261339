#!/usr/bin/env bash
# Builds the npm package `gdpo-sr` into target/npm/gdpo-sr and packs it into a tarball:
# the web crate for wasm32 (release) through wasm-bindgen (ES module + TypeScript types),
# the worker-backed client (web/js), its types and README, and the default model
# (`gdpo-sr.safetensors`, what `Upscaler.load()` loads): the page's composed weight file,
# www/weights/default.safetensors (scripts/compose-weights.sh composes it from the committed
# UNet and ../shared/weights/taef2 when it is missing), with TAEF2's licence beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/npm/gdpo-sr
version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)

wasm=$(./scripts/build-wasm.sh) # cargo reports on stderr; stdout is the path
rm -rf "$out"
mkdir -p "$out"
wasm-bindgen --target web --typescript --out-name web --out-dir "$out" "$wasm"
cp web/js/gdpo-sr.js web/js/gdpo-sr-worker.js web/js/gdpo-sr.d.ts web/js/README.md "$out/"
[ -f www/weights/default.safetensors ] || ./scripts/compose-weights.sh
cp www/weights/default.safetensors "$out/gdpo-sr.safetensors"
files='"gdpo-sr.safetensors"'
taef2=${GDPO_SR_TAEF2_DIR:-../shared/weights/taef2}
if [ -f "$taef2/LICENSE" ]; then
    cp "$taef2/LICENSE" "$out/LICENSE-TAEF2"
    files+=', "LICENSE-TAEF2"'
fi
cat > "$out/package.json" <<JSON
{
  "name": "gdpo-sr",
  "version": "${version}",
  "description": "Generative one-step diffusion super-resolution in the browser (WebGPU, CPU fallback), in a Web Worker.",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "gdpo-sr.js",
  "module": "gdpo-sr.js",
  "types": "gdpo-sr.d.ts",
  "exports": {
    ".": { "types": "./gdpo-sr.d.ts", "default": "./gdpo-sr.js" },
    "./worker": "./gdpo-sr-worker.js",
    "./wasm": { "types": "./web.d.ts", "default": "./web.js" }
  },
  "files": ["gdpo-sr.js", "gdpo-sr-worker.js", "gdpo-sr.d.ts", "web.js", "web.d.ts", "web_bg.wasm", "web_bg.wasm.d.ts", "README.md", ${files}],
  "sideEffects": false,
  "keywords": ["super-resolution", "upscaler", "diffusion", "webgpu", "wasm"]
}
JSON
(cd target/npm && npm pack ./gdpo-sr --pack-destination . --loglevel=error >/dev/null)
echo "built target/npm/gdpo-sr-${version}.tgz"
