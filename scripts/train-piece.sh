#!/usr/bin/env bash
# One training piece of the shipped model (docs/training.md, "Pieces"): trains
# configs/naosd-taef2.toml from the committed fidelity UNet for at most SECONDS, exports the EMA
# UNet back over weights/taef2-unet-fidelity.safetensors (f16, the only state the next piece
# needs, on any machine), appends the piece to weights/taef2-unet-fidelity.json and re-makes
# the shipped detail range, weights/taef2-unet.safetensors (this lineage at detail 0, the
# perceptual piece at 1), with the default of weights/taef2-unet.json. Commit the files
# afterwards (and the range record's new SHA-256s).
#
#   scripts/train-piece.sh SECONDS [extra trainer-native naosd arguments, e.g. --backend cpu]
#
# Runs a copy of target/debug/trainer-native (built with `--features tch` when the PyTorch
# venv exists: LibTorch is then the default backend), so that rebuilding the workspace while a
# piece trains does not touch the running binary. NICE (default 10) lowers the piece's CPU
# priority below interactive work such as compiling. A piece stopped early (Ctrl-C, a kill)
# keeps its checkpoints in its run dir: `--resume` continues it; nothing is exported then.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: train-piece.sh SECONDS [naosd arguments]}
shift
config=configs/naosd-taef2.toml
weights=weights/taef2-unet-fidelity.safetensors
record=weights/taef2-unet-fidelity.json

# Rebuilt when missing or older than this script (the range at the end needs `range`).
if [ ! -x target/debug/trainer-native ] || ! target/debug/trainer-native range --help >/dev/null 2>&1; then
    features=()
    [ -f .venv-bench/libtorch/lib/libtorch_cpu.so ] && features=(--features tch)
    cargo build -p trainer-native --bin trainer-native "${features[@]}"
fi
stamp=$(date -u +%Y%m%d-%H%M%S)
run=runs/piece-$stamp
mkdir -p "$run"
cp target/debug/trainer-native "$run/trainer-native"
# A batch is a pure function of (seed, step) and every piece starts at step 0, so each piece
# trains with its own seed (its index in the record) to see crops the earlier pieces did not
# (pieces 1-4 all had seed 0 and so replayed the same first batches).
piece_seed=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["pieces"]))' "$record")
grep -qx 'seed = 0' "$config" || { echo "train-piece.sh: $config lacks the line 'seed = 0'" >&2; exit 1; }
sed "s/^seed = 0\$/seed = $piece_seed/" "$config" >"$run/config.toml"
config=$run/config.toml
started=$(date +%s)
nice -n "${NICE:-10}" "$run/trainer-native" naosd --config "$config" --run-dir "$run" \
    --time-limit "$seconds" "$@"
minutes=$(( ($(date +%s) - started + 30) / 60 ))
"$run/trainer-native" export --weights "$run/naosd.safetensors" --trained-part unet \
    --out "$weights"

# The piece's record: steps, wall time, throughput and the last validation, from its log.
python3 - "$run" "$record" "$minutes" "$stamp" "$*" "$config" <<'PY'
import json, os, platform, sys, tomllib

run, record, minutes, stamp, extra, config = sys.argv[1:7]
train = tomllib.load(open(config, "rb"))["train"]
steps, rates, val = 0, [], {}
with open(os.path.join(run, "log.jsonl")) as f:
    for line in f:
        entry = json.loads(line)
        if "validation" in entry:
            val = entry
        elif "step" in entry:
            steps = max(steps, entry["step"])
            rates.append(entry.get("images_per_s", 0.0))
rates = sorted(r for r in rates if r)
doc = json.load(open(record))
previous = doc["pieces"][-1] if doc["pieces"] else None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
doc["pieces"].append({
    "date": f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}",
    "start": f"piece {len(doc['pieces'])}" if previous else "init",
    "steps": steps,
    "batch": train["batch"],
    "crop": tomllib.load(open(config, "rb"))["crop"],
    "lr": train["lr"],
    "seed": train["seed"],
    "minutes": int(minutes),
    "images_per_s_median": round(rates[len(rates) // 2], 3) if rates else None,
    "hardware": f"{os.cpu_count()} cores ({cpu}), {platform.machine()}",
    "arguments": extra or "(defaults)",
    "val_psnr_y_set14_384": round(val.get("val_psnr_y", float("nan")), 3),
    "val_psnr_y_bicubic": round(val.get("val_psnr_y_bicubic", float("nan")), 3),
})
doc["total_steps"] = sum(p["steps"] for p in doc["pieces"])
doc["total_training_minutes"] = sum(p["minutes"] for p in doc["pieces"])
with open(record + ".partial", "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
os.replace(record + ".partial", record)
print(f"piece: {steps} steps in {minutes} min; val PSNR-Y {val.get('val_psnr_y')} "
      f"(bicubic {val.get('val_psnr_y_bicubic')}); {record} updated")
PY

# The shipped default is a detail range from this lineage to the perceptual piece: re-make it,
# and its record's hashes, from the new fidelity UNet.
range_record=weights/taef2-unet.json
default=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["default"])' "$range_record")
"$run/trainer-native" range --low "$weights" --high weights/taef2-unet-perceptual.safetensors \
    --default "$default" --out weights/taef2-unet.safetensors
python3 - "$range_record" <<'PY'
import hashlib, json, os, sys

record = sys.argv[1]
doc = json.load(open(record))
for end in ("low", "high"):
    doc[end]["sha256"] = hashlib.sha256(open(doc[end]["file"], "rb").read()).hexdigest()
doc["sha256"] = hashlib.sha256(open("weights/taef2-unet.safetensors", "rb").read()).hexdigest()
with open(record + ".partial", "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
os.replace(record + ".partial", record)
PY
echo "train-piece.sh: weights/taef2-unet.safetensors re-made (default detail $default) from the new" \
    "fidelity UNet: re-check the default (docs/training.md) and re-run scripts/quality.sh"
