#!/usr/bin/env bash
# The main job: serve the GDPO-SR page on http://127.0.0.1:${PORT:-8080}.
# Until the web issue lands, www/ holds a placeholder page that says so.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
port="${PORT:-8080}"
echo "serving www/ on http://127.0.0.1:${port} (Ctrl-C to stop)"
exec python3 -m http.server --bind 127.0.0.1 --directory www "$port"
