#!/usr/bin/env bash
# Compiles the web crate for the browser (wasm32, release) into target/wasm, the target dir
# that the page (build-web.sh, through trunk) and the npm package (build-npm.sh) share.
# Its own target dir, apart from the native one, so that it can compile while a native cargo
# build runs (cargo locks a target dir for the length of a build); nothing is lost, since no
# artifact of a wasm32 release build is shared with the native dev build anyway.
#
#   build-wasm.sh        compile, print the module's path
#   . build-wasm.sh env  only export CARGO_TARGET_DIR (for trunk)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR="$root/target/wasm"
if [ "${1:-}" = env ]; then
    return 0 2>/dev/null || exit 0
fi
cd "$root"
cargo build --release -p web --lib --target wasm32-unknown-unknown
echo "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/web.wasm"
