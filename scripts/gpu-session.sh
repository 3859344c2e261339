#!/usr/bin/env bash
# Everything a lent GPU machine is used for, in one call of a fixed length (docs/gpu.md):
# the CUDA rows of docs/benchmarks.md (burn-cuda inference and training steps, PyTorch CUDA
# on the same work), then a time-boxed training piece of the fidelity UNet
# (configs/naosd-taef2.toml from the committed weights/taef2-unet-fidelity.safetensors, as
# scripts/train-piece.sh does here) whose exported UNet (f16, 8.6 MB) comes back. Each part has its own time cap taken from one
# deadline, so a failing or slow part never starves the ones after it.
#
# Prepared on the build machine (the device has no Rust toolchain and reaches no network):
#   ./scripts/gpu-prepare.sh          # release build, compressed binary and data in .devdata/
# Run on the device machine from the repository root, with .devdata carried:
#   GPU_BUDGET=540 ./scripts/gpu-session.sh
# On a machine with a GPU and a Rust build, scripts/bench.sh runs its benchmark parts with
# GPU_BIN=target/release/trainer-native.
# Results land in $OUT (default target/gpu): results.tar.gz (JSON, logs, eval tables) and the
# trained UNet, $OUT/taef2-unet-fidelity.safetensors: copy it over weights/, add the piece to
# weights/taef2-unet-fidelity.json by hand, and re-make the shipped detail range with
# `trainer-native range --low weights/taef2-unet-fidelity.safetensors --high
# weights/taef2-unet-perceptual.safetensors --default D --out weights/taef2-unet.safetensors`
# (D and the hashes: weights/taef2-unet.json).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/gpu}
BUDGET=${GPU_BUDGET:-540}
NAOSD_SECONDS=${GPU_NAOSD_SECONDS:-240}
# The GPU takes a far larger batch than the 2-core machines' 4 crops.
NAOSD_BATCH=${GPU_NAOSD_BATCH:-32}
WORK=${GPU_WORK:-/tmp/gpu-session}
# Which parts run (comma list): steps (burn-cuda steps and untiled inference, default
# convolution: burn's, as for training), ops (the same plus single-op timings, with the im2col
# convolution that inference uses on CUDA), torch (PyTorch CUDA, strict f32 then TF32), train, speed (images/s
# of the real NAOSD stage over 20 steps from random weights, with each convolution algorithm),
# infer (0.25/1/4 MP bench), flops, ops-native (ops with GDPO_SR_CONV=native, for an A/B in
# one call). The 0.25 MP inference always runs first as the smoke test.
# GDPO_SR_CONV (native|im2col) picks the convolution algorithm of every part but `speed`.
PARTS=",${GPU_PARTS:-steps,torch,train,infer,flops},"
want() { [[ $PARTS == *",$1,"* ]]; }
BIN=$WORK/trainer-native
DATA=.devdata
mkdir -p "$OUT" "$WORK/logs"
deadline=$((SECONDS + BUDGET))

log() { printf '[gpu %4ds] %s\n' "$SECONDS" "$*"; }
# part NAME CAP CMD...: runs CMD under `timeout` (CAP seconds, or what is left before the
# deadline less 25 s for packing the results), its output in logs/NAME.log; never stops the
# script. Records "NAME rc seconds" in parts.txt.
part() {
    local name=$1 cap=$2
    shift 2
    local left=$((deadline - SECONDS - 25))
    [ "$cap" -gt "$left" ] && cap=$left
    if [ "$cap" -lt 10 ]; then
        log "$name: skipped (no time left)"
        echo "$name skipped 0" >>"$WORK/parts.txt"
        return 1
    fi
    log "$name (cap ${cap}s): $*"
    local started=$SECONDS rc
    timeout --kill-after=5 "$cap" "$@" >"$WORK/logs/$name.log" 2>&1
    rc=$?
    echo "$name $rc $((SECONDS - started))" >>"$WORK/parts.txt"
    log "$name: exit $rc after $((SECONDS - started)) s; $(tail -n 2 "$WORK/logs/$name.log" | tr '\n' ' ' | cut -c1-300)"
    return "$rc"
}
pack() {
    cp "$0" "$WORK/" 2>/dev/null
    tar -czf "$OUT/results.tar.gz" -C "$WORK" --exclude=trainer-native --exclude='*.safetensors' \
        --exclude=checkpoints --exclude='discriminator.bin' . 2>/dev/null
    log "packed $(du -h "$OUT/results.tar.gz" | cut -f1) into $OUT/results.tar.gz"
}

# The binary travels xz-compressed (the uncompressed one is over the call's size limit);
# GPU_BIN names one already there instead (scripts/bench.sh on a machine with a GPU).
if [ -n "${GPU_BIN:-}" ]; then
    BIN=$GPU_BIN
else
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        "$DATA/trainer-native.xz" "$BIN" && chmod +x "$BIN" || { log "no binary"; exit 1; }
fi
# cubecl compiles its kernels with NVRTC at run time (loaded dynamically by cudarc, like the
# driver): put every CUDA library folder of the image on the search path.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    $(python3 -c "import nvidia, os; print(' '.join(os.path.join(p, q, 'lib') for p in nvidia.__path__ for q in os.listdir(p)))" 2>/dev/null); do
    [ -d "$d" ] && LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
done
export LD_LIBRARY_PATH CUDA_PATH=${CUDA_PATH:-/usr/local/cuda} RUST_BACKTRACE=1
{
    date -u
    nvidia-smi
    nvcc --version
    lscpu | head -20
    python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
    ldconfig -p | grep -E 'libnvrtc|libcuda\.so' | head
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} >"$WORK/env.txt" 2>&1
: >"$WORK/parts.txt"

# 1. The smallest CUDA run first: if it fails nothing else on CUDA will work.
if ! part infer-0.25 120 "$BIN" bench inference --preset taef2 --out-mp 0.25 --backend cuda \
    --runs 3 --json "$WORK/inference.jsonl"; then
    log "burn-cuda does not run here: see logs/infer-0.25.log"
    pack
    exit 1
fi
# 2. Training steps and untiled inference, burn-cuda and PyTorch CUDA on the same work
# (defaults of both sides: NAOSD batch 2 crop 256, GDPO batch 1 G 6 crop 128).
want steps && part steps-cuda 90 "$BIN" bench steps --preset taef2 --backend cuda \
    --skip breakdown,ops --json "$WORK/steps-cuda.json"
want ops && part steps-cuda-im2col 150 env GDPO_SR_CONV=im2col "$BIN" bench steps --preset taef2 \
    --backend cuda --skip breakdown --json "$WORK/steps-cuda-im2col.json"
want torch && part torch-cuda 90 python3 tests/pytorch/bench_torch.py --device cuda --tf32 off \
    --json "$WORK/torch-cuda.json"

# 3. A training piece of the fidelity UNet, time-boxed: the repository's config with the
# carried data and TAEF2 (.devdata/taef2, gpu-prepare.sh), from the committed fidelity UNet.
export GDPO_SR_TAEF2_DIR=$DATA/taef2
# carried_config OUT [SED-EXPR...]: configs/naosd-taef2.toml reading the carried data.
carried_config() {
    local out=$1
    shift
    sed -e "s|^data = .*|data = \"$DATA/train\"|" -e "s|^validation = .*|validation = \"$DATA/eval/Set14\"|" \
        "$@" configs/naosd-taef2.toml >"$out"
}
carried_config "$WORK/naosd.toml" -e "s|^batch = .*|batch = $NAOSD_BATCH|"
want train && part naosd $((NAOSD_SECONDS + 90)) "$BIN" naosd --config "$WORK/naosd.toml" \
        --run-dir "$WORK/naosd" --backend cuda --time-limit "$NAOSD_SECONDS" &&
    part export 30 "$BIN" export --weights "$WORK/naosd/naosd.safetensors" --trained-part unet \
        --out "$OUT/taef2-unet-fidelity.safetensors" &&
    part eval-set14 90 "$BIN" eval --hr "$DATA/eval/Set14" \
        --weights "piece=$WORK/naosd/naosd.safetensors" --backend cuda --out "$WORK/eval-set14.md"

# The NAOSD stage's own throughput at that batch with each convolution algorithm, from the
# committed UNet (the cost does not depend on the values), no validation.
if want speed; then
    carried_config "$WORK/naosd-speed.toml" -e "s|^batch = .*|batch = $NAOSD_BATCH|" \
        -e "s|^validate_every = .*|validate_every = 1000|"
    for conv in im2col native; do
        part "naosd-speed-$conv" 90 env GDPO_SR_CONV=$conv "$BIN" naosd --config "$WORK/naosd-speed.toml" \
            --run-dir "$WORK/naosd-speed-$conv" --backend cuda --stop-after 20
    done
fi

# 4. Larger inference sizes (tiled at 4 MP); PyTorch with its default TF32 convolutions.
want torch && part torch-cuda-tf32 60 python3 tests/pytorch/bench_torch.py --device cuda --tf32 default \
    --json "$WORK/torch-cuda-tf32.json"
want infer && part infer-1 60 "$BIN" bench inference --preset taef2 --out-mp 1 --backend cuda --runs 3 \
    --json "$WORK/inference.jsonl"
want infer && part infer-4 90 "$BIN" bench inference --preset taef2 --out-mp 4 --backend cuda --runs 3 \
    --json "$WORK/inference.jsonl"
want flops && part flops-cuda 60 "$BIN" bench flops --preset taef2 --backend cuda --json "$WORK/flops.jsonl"
# The same-call baseline of `ops` with burn's own convolution (last: the first to go when time
# runs short).
want ops-native && part steps-cuda-native 150 env GDPO_SR_CONV=native "$BIN" bench steps \
    --preset taef2 --backend cuda --skip breakdown --json "$WORK/steps-cuda-native.json"
pack
cat "$WORK/parts.txt"
