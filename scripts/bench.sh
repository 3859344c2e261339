#!/usr/bin/env bash
# Reproduces docs/benchmarks.md on this machine with one command: installs what is missing,
# builds release, runs every part (each writes JSON into target/bench/), then composes the
# report (scripts/bench_report.py). A part that fails or is skipped becomes a "not run (why)"
# row; the report is always written.
#
#   ./scripts/bench.sh                        # everything
#   BENCH_SKIP=torch,browser ./scripts/bench.sh
#
# Parts (names for BENCH_SKIP): setup (the tools of the wgpu and browser parts), native
# (inference MP/s and peak memory, per backend and size: cpu is burn-flex, tch LibTorch
# through burn-tch),
# flops (counted FLOPs, measured peak), criterion (micro-benchmarks), torch (PyTorch
# reference: parity, inference, training steps), browser (our page vs UpscalerJS in headless
# Chromium, and vs native), wgpu, cuda (backends; cuda runs only where nvidia-smi works),
# gpu (with cuda: burn-cuda vs the machine's PyTorch CUDA through scripts/gpu-session.sh,
# into the report's "GPU" section; without a GPU the section shows docs/results/gpu-*).
# Knobs: BENCH_SIZES (output MP, default "0.25 1 4"), BENCH_RUNS (timed runs per size,
# default 3), BENCH_WGPU_SIZES (default: BENCH_SIZES), BENCH_WGPU_RUNS (default 1),
# BENCH_STEPS_ARGS (training-step sizes given to both the PyTorch and the burn side, e.g.
# "--batch 2 --crop 256 --inputs 256x256"; default: their shared defaults), BENCH_BIN (time this
# trainer-native binary instead of building release). A skipped part keeps its JSON from
# an earlier run (the report gives that file's date); a part that runs replaces it.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=target/bench
SKIP=",${BENCH_SKIP:-},"
SIZES=${BENCH_SIZES:-0.25 1 4}
WGPU_SIZES=${BENCH_WGPU_SIZES:-$SIZES}
RUNS=${BENCH_RUNS:-3}
# Mesa lavapipe runs the model ~15x slower than burn-flex: one timed run per size there.
WGPU_RUNS=${BENCH_WGPU_RUNS:-1}
STEPS_ARGS=${BENCH_STEPS_ARGS:-}
BIN=target/release/trainer-native
PY=.venv-bench/bin/python
export CARGO_TERM_COLOR=never

rm -rf "$OUT/status"
mkdir -p "$OUT/status" "$OUT/logs"
: >"$OUT/commands.txt"

log() { printf '[bench] %s\n' "$*" >&2; }
skipped() { [[ $SKIP == *",$1,"* ]]; }
# status NAME WORD REASON...: one line per step for the report (ok / failed / skipped).
status() {
    local name=$1
    shift
    printf '%s\n' "$*" >"$OUT/status/$name"
}
# step NAME CMD...: runs CMD with its output in logs/NAME.log (and on the terminal), records
# the command and whether it worked. Never stops the script.
step() {
    local name=$1
    shift
    log "$name: $*"
    printf '%s\n' "$*" >>"$OUT/commands.txt"
    # The load average before and after: on a shared machine it says how far to trust a time.
    local started=$SECONDS rc load
    load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')
    "$@" 2>&1 | tee "$OUT/logs/$name.log"
    rc=${PIPESTATUS[0]}
    load="load $load -> $(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
    if [ "$rc" -eq 0 ]; then
        status "$name" "ok $((SECONDS - started)) s, $load"
        return 0
    fi
    status "$name" "failed (exit $rc after $((SECONDS - started)) s, $load; see $OUT/logs/$name.log: $(tail -n 1 "$OUT/logs/$name.log" | cut -c1-200))"
    return 1
}
# part NAME: whether the part runs now; a skipped one is recorded as such.
part() {
    if skipped "$1"; then
        log "skipping $1 (BENCH_SKIP)"
        status "$1" "skipped (BENCH_SKIP=${BENCH_SKIP})"
        return 1
    fi
    return 0
}

# Installs: the project's tools (lavapipe for wgpu, Chromium, wasm-bindgen, trunk, node
# packages), then the release build every part times.
if part setup; then
    step setup ./scripts/setup.sh || log "setup failed; continuing with what is installed"
fi
# The PyTorch venv: the reference of part torch, and the LibTorch that the `tch` feature
# (burn-tch, the trainer's default CPU backend) links; without it the build has no tch.
features=()
if step torch-venv ./tests/pytorch/setup-venv.sh; then
    features=(--features tch)
fi
if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$BENCH_BIN # an existing build (e.g. the dev profile's, whose dependencies are at opt-level 3)
    ldd "$BIN" | grep -q libtorch_cpu || features=()
elif ! step build cargo build --release -p trainer-native "${features[@]}"; then
    log "the release build failed: only the report is written"
    SKIP=",native,flops,criterion,torch,browser,"
fi

# Backends: the CPU (burn-flex, and LibTorch through burn-tch when built); wgpu (Vulkan: a
# GPU, or Mesa lavapipe on the CPU); CUDA only where the driver answers.
backends=(cpu)
if [ ${#features[@]} -gt 0 ]; then backends+=(tch); fi
if part wgpu; then backends+=(wgpu); fi
if skipped cuda; then
    status cuda "skipped (BENCH_SKIP=${BENCH_SKIP})"
elif nvidia-smi -L >/dev/null 2>&1; then
    backends+=(cuda)
    status cuda "ok $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"
else
    status cuda "not measured: no GPU on this machine (nvidia-smi absent or failing)"
fi

# 4. FLOPs: counted per output MP, and the peak each backend reaches on this machine.
if part flops; then
    rm -f "$OUT/flops.jsonl"
    for b in "${backends[@]}"; do
        step "flops-$b" "$BIN" bench flops --preset taef2 --backend "$b" --json "$OUT/flops.jsonl"
    done
    status flops "ran"
fi

# 1. Native inference: one process per backend and size, so each peak RSS is that size's.
if part native; then
    rm -f "$OUT/inference.jsonl"
    for b in "${backends[@]}"; do
        sizes=$SIZES runs=$RUNS
        [ "$b" = wgpu ] && sizes=$WGPU_SIZES runs=$WGPU_RUNS
        for mp in $sizes; do
            step "native-$b-$mp" "$BIN" bench inference --preset taef2 --out-mp "$mp" \
                --backend "$b" --runs "$runs" --json "$OUT/inference.jsonl"
        done
    done
    status native "ran"
fi

# Micro-benchmarks of the hot kernels (criterion writes target/criterion/).
if part criterion; then
    rm -rf target/criterion
    step criterion cargo bench -p trainer-native --bench kernels
fi

# 2. PyTorch reference: the same model in PyTorch (tests/pytorch): parity on cases dumped by
# burn, inference, FLOPs counted by torch, training steps; then our training steps on the CPU
# with the same arguments (both sides take --batch --crop --gdpo-batch --gdpo-crop --group).
if part torch; then
    rm -f "$OUT/torch.json" "$OUT"/steps-*.json
    # shellcheck disable=SC2206
    steps_args=($STEPS_ARGS)
    if [ -x "$PY" ]; then
        cases=()
        for preset in tiny taef2; do
            if step "parity-dump-$preset" "$BIN" bench parity-dump --preset "$preset" \
                --out "$OUT/parity-$preset"; then
                cases+=(--case "$OUT/parity-$preset")
            fi
        done
        step torch-bench "$PY" tests/pytorch/bench_torch.py --json "$OUT/torch.json" \
            "${cases[@]}" "${steps_args[@]}"
    fi
    for b in cpu tch; do
        [[ " ${backends[*]} " == *" $b "* ]] || continue
        step "steps-$b" "$BIN" bench steps --preset taef2 --backend "$b" "${steps_args[@]}" \
            --json "$OUT/steps-$b.json"
    done
    status torch "ran"
fi

# 3. The browser: our page against UpscalerJS in headless Chromium, and against native.
if part browser; then
    rm -f "$OUT/browser.json"
    step build-web ./scripts/build-web.sh &&
        step peer-setup ./tests/browser/peer/setup.sh &&
        step browser node tests/browser/bench-peer.mjs --json "$OUT/browser.json"
fi

# The GPU section: burn-cuda against the PyTorch CUDA installed on this machine (`python3`),
# single ops with both convolution algorithms, the tiled inference sizes, FLOP/s; the same
# script a lent GPU machine runs (docs/gpu.md), here on the release binary just built.
gpu_args=()
if [[ " ${backends[*]} " == *" cuda "* ]] && part gpu; then
    rm -rf "$OUT/gpu"
    mkdir -p "$OUT/gpu/local"
    step gpu env GPU_BIN="$BIN" GPU_WORK="$OUT/gpu/local" OUT="$OUT/gpu/packed" \
        GPU_BUDGET="${BENCH_GPU_BUDGET:-1800}" GPU_PARTS=ops,torch,infer,flops,ops-native \
        ./scripts/gpu-session.sh
    gpu_args=(--gpu-dir "$OUT/gpu")
fi

# The report, whatever ran.
python3 scripts/bench_report.py --dir "$OUT" --out docs/benchmarks.md "${gpu_args[@]}"
log "wrote docs/benchmarks.md"
