#!/usr/bin/env bash
# The main job: build the page and serve it with the shipped default weights on
# http://127.0.0.1:${PORT:-8080}. Everything runs in the visitor's browser.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/compose-weights.sh
./scripts/build-web.sh
exec python3 scripts/serve.py target/www "${PORT:-8080}"
