#!/usr/bin/env bash
# The quality table of docs/quality.md ("Against bicubic and real upscalers"), end to end:
# for each LR kind (antialiased bicubic /4, the seeded Real-ESRGAN degradation) and each
# evaluation set of ../shared/data/eval, `trainer-native eval --save-lr` writes the LR every row
# sees; the CNN peers (FSRCNN, ESPCN, LapSRN with their published x4 weights, OpenCV
# dnn_superres: tests/iqa/peers.py) and the GAN peers (UpscalerJS ESRGAN slim/medium/thick in
# headless Chromium: tests/browser/peer-upscale.mjs) upscale it once (their outputs are kept
# under target/quality and reused); then one `eval` scores bicubic, Lanczos, the peers and our
# weight files with PSNR-Y, SSIM-Y, MS-SSIM, GMSD, HaarPSI, NIQE and BRISQUE (and the HR images'
# own NIQE/BRISQUE) and writes side-by-side crops; the tables, the chosen crops and the
# commands replace the generated section of docs/quality.md.
#
#   scripts/quality.sh [NAME=WEIGHTS ...]      (default: the shipped range at its default and its two ends,
#       shipped=weights/taef2-unet.safetensors fidelity=...-fidelity perceptual=...-perceptual)
#
# Knobs: SETS (default "Set5 Set14 BSD100"), KINDS (default "bicubic realesrgan"), LIMIT
# (images per set, for a quick look), ESRGAN (default "slim,medium,thick"; empty: no GAN
# peers), CROPS (the images whose crops go into the document, SET/STEM, space-separated),
# BACKEND (default: trainer-native's), PEERS_ONLY=1 (only write the LR and run the peers, e.g.
# while a training piece produces the weights to score). Needs ../shared (data/eval, iqa, peers, weights/taef2): each missing part is
# a clear error.
set -euo pipefail
cd "$(dirname "$0")/.."

sets=${SETS:-Set5 Set14 BSD100}
kinds=${KINDS:-bicubic realesrgan}
esrgan=${ESRGAN-slim,medium,thick}
crops=${CROPS:-Set5/butterfly Set14/zebra Set14/comic BSD100/img_004_SRF_4_HR}
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(shipped=weights/taef2-unet.safetensors
    fidelity=weights/taef2-unet-fidelity.safetensors
    perceptual=weights/taef2-unet-perceptual.safetensors)
eval_dir=../shared/data/eval
out=target/quality
doc=docs/quality.md

for need in "$eval_dir" ../shared/iqa ../shared/peers; do
    [ -d "$need" ] || { echo "quality.sh: $need is missing (see the README's data section)" >&2; exit 1; }
done
trainer=target/debug/trainer-native
if [ ! -x "$trainer" ] || ! "$trainer" eval --help | grep -q -- --save-lr; then
    echo "quality.sh: $trainer is missing or older than this script: build the workspace first" \
        "(scripts/test.sh does, or: cargo build --workspace --bins --tests" \
        "--features trainer-native/tch,integration-tests/tch)" >&2
    exit 1
fi
./tests/iqa/setup-venv.sh >/dev/null
if [ -n "$esrgan" ]; then
    (cd tests/browser && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund; })
    ./tests/browser/peer/setup.sh
fi
backend=()
[ -n "${BACKEND:-}" ] && backend=(--backend "$BACKEND")
limit=()
[ -n "${LIMIT:-}" ] && limit=(--limit "$LIMIT")
weights=()
for m in "${models[@]}"; do weights+=(--weights "$m"); done

started=$(date +%s)
commands=()
for kind in $kinds; do
    degrade=()
    [ "$kind" = realesrgan ] && degrade=(--degrade default)
    for set in $sets; do
        dir=$out/$kind/$set
        mkdir -p "$dir"
        # The LR of every row (deterministic: seed 0), then the peers on it, once: their kept
        # outputs are dropped when the LR they were made from changed.
        "$trainer" eval --hr "$eval_dir/$set" "${degrade[@]}" "${limit[@]}" --save-lr "$dir/lr" \
            "${backend[@]}" >/dev/null
        lr_hash=$(cat "$dir"/lr/*.png | sha256sum | cut -d' ' -f1)
        if [ "$(cat "$dir/sr/lr.sha256" 2>/dev/null)" != "$lr_hash" ]; then
            rm -rf "$dir/sr"
            mkdir -p "$dir/sr"
            echo "$lr_hash" >"$dir/sr/lr.sha256"
        fi
        .venv-iqa/bin/python tests/iqa/peers.py "$dir/lr" "$dir/sr"
        peers=(--sr "fsrcnn=$dir/sr/fsrcnn" --sr "espcn=$dir/sr/espcn" --sr "lapsrn=$dir/sr/lapsrn")
        if [ -n "$esrgan" ]; then
            node tests/browser/peer-upscale.mjs "$dir/lr" "$dir/sr" --models "$esrgan"
            for m in ${esrgan//,/ }; do peers+=(--sr "esrgan-$m=$dir/sr/esrgan-$m"); done
        fi
        [ -n "${PEERS_ONLY:-}" ] && continue
        cmd=("$trainer" eval --hr "$eval_dir/$set" --lr "$dir/lr" "${limit[@]}" "${peers[@]}"
            "${weights[@]}" --standard-iqa --crops "$dir/crops" "${backend[@]}" --out "$dir/table.md")
        echo "+ ${cmd[*]}" >&2
        "${cmd[@]}"
        commands+=("${cmd[*]}")
    done
done
minutes=$(( ($(date +%s) - started + 30) / 60 ))
[ -n "${PEERS_ONLY:-}" ] && { echo "quality.sh: peers done in $minutes min"; exit 0; }

# The generated section of docs/quality.md: everything between its two markers.
python3 - "$doc" "$out" "$minutes" "$kinds" "$sets" "$crops" "${commands[@]}" <<'PY'
import os, shutil, subprocess, sys

doc, out, minutes, kinds, sets, crops = sys.argv[1:7]
commands = sys.argv[7:]
begin, end = "<!-- quality.sh: begin -->", "<!-- quality.sh: end -->"
title = {"bicubic": "antialiased bicubic /4 (the SR literature's LR)",
         "realesrgan": "the seeded Real-ESRGAN degradation (`--degrade default`, seed 0)"}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
lines = [begin, "",
         f"Written by `scripts/quality.sh` (commit {commit}, {minutes} min on {os.cpu_count()} cores, "
         f"{cpu}). Rows: the HR images' own no-reference scores (the naturalness to aim at), "
         "bicubic (step 1 of our pipeline), Lanczos3, the peers, our weight files. `time` is our "
         "own rows' wall time for the whole set (peers ran outside `eval`).", ""]
for kind in kinds.split():
    lines += [f"### LR: {title.get(kind, kind)}", ""]
    for s in sets.split():
        lines += [open(os.path.join(out, kind, s, "table.md")).read().strip(), ""]
lines += ["### Crops", "",
          "Per image, left to right: HR, then the rows of the table in order (bicubic, Lanczos, "
          "the peers, ours); 128x128 HR pixels where the HR has the most detail. Every image's "
          f"strip is in `{out}/<kind>/<set>/crops/` after a run.", ""]
os.makedirs("docs/results/quality", exist_ok=True)
for kind in kinds.split():
    for c in crops.split():
        s, stem = c.split("/")
        src = os.path.join(out, kind, s, "crops", stem + ".png")
        if not os.path.exists(src):
            continue
        dst = f"docs/results/quality/{kind}-{s}-{stem}.png"
        shutil.copyfile(src, dst)
        lines += [f"{s}/{stem}, {kind} LR:", "", f"![{s} {stem}, {kind} LR]({dst[len('docs/'):]})", ""]
lines += ["### Commands", "", "```sh"] + commands + ["```", "", end]
text = open(doc).read()
if begin in text and end in text:
    text = text[:text.index(begin)] + "\n".join(lines) + text[text.index(end) + len(end):]
else:
    text = text.rstrip("\n") + "\n\n## Against bicubic and real upscalers\n\n" + "\n".join(lines) + "\n"
with open(doc + ".partial", "w") as f:
    f.write(text)
os.replace(doc + ".partial", doc)
print(f"quality.sh: {doc} updated")
PY
