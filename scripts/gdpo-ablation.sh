#!/usr/bin/env bash
# The GDPO table of docs/gdpo.md: the full-ARF run of configs/gdpo-tiny.toml and its variants
# (the paper's reward ablations, G = 2 Diffusion-DPO, the image-level GRPO-style loss), each
# from the same reference for the same steps, then `eval` of all of them on held-out images.
# Usage: scripts/gdpo-ablation.sh [STEPS] [BACKEND]   (needs runs/tiny-naosd from
# configs/naosd-tiny.toml; fits the NSS model if it is missing)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-300}"
backend="${2:-cpu}"
bin=target/release/trainer-native
cargo build --release --bin trainer-native
[ -f runs/nss-train-p32.json ] ||
  "$bin" fit-nss --data ../shared/data/train --patch 32 --out runs/nss-train-p32.json
base=configs/gdpo-tiny.toml
mkdir -p runs/gdpo-configs
variant() { # NAME SED-EXPRESSION
  sed -e "s/^steps = .*/steps = $steps/" -e "$2" "$base" > "runs/gdpo-configs/$1.toml"
  /usr/bin/time -f "$1: %e s wall" "$bin" gdpo --config "runs/gdpo-configs/$1.toml" \
    --run-dir "runs/gdpo-$1" --resume --backend "$backend"
}
variant full ''
variant fidelity_only 's/^mode = "full"/mode = "fidelity_only"/'
variant detail_only 's/^mode = "full"/mode = "detail_only"/'
variant fixed_rho 's/^mode = "full"/mode = "fixed_rho"\nfixed_rho = 0.5/'
variant dpo_g2 's/^group = 6/group = 2/'
variant grpo 's/^loss = "gdpo"/loss = "grpo"/'
for set in Set14 BSD100; do
  "$bin" eval --hr "../shared/data/eval/$set" --degrade default --limit 20 --backend "$backend" \
    --weights NAOSD=runs/tiny-naosd/naosd.safetensors \
    --weights GDPO=runs/gdpo-full/gdpo.safetensors \
    --weights "fidelity-only=runs/gdpo-fidelity_only/gdpo.safetensors" \
    --weights "detail-only=runs/gdpo-detail_only/gdpo.safetensors" \
    --weights "fixed-rho-0.5=runs/gdpo-fixed_rho/gdpo.safetensors" \
    --weights "G2-DPO=runs/gdpo-dpo_g2/gdpo.safetensors" \
    --weights "GRPO-style=runs/gdpo-grpo/gdpo.safetensors" \
    --discriminator runs/tiny-naosd/discriminator.bin --discriminator-channels 16,32,64 \
    --nss runs/nss-train-p32.json --out "runs/gdpo-eval-$set.md"
done
