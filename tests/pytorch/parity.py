"""Parity of the PyTorch reference with burn on a case written by
`trainer-native bench parity-dump --preset P --out DIR`.

Runs the whole one-step pipeline in PyTorch (f32, CPU) from the case's LR input and weights,
drawing the injected noise itself from the seed (tests/pytorch/gdpo_sr_torch.py, hashing from
model/tests/reference/noise_golden.py), and prints the max abs difference to burn's tensors at
every stage. Exits 1 when any stage differs by more than the tolerance (default 1e-4).

    .venv-bench/bin/python tests/pytorch/parity.py --case DIR [--case DIR2 ...] [--json FILE]
"""

import argparse
import json
import os
import sys

import torch
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gdpo_sr_torch as ref  # noqa: E402

STAGES = ["lr_up", "noise", "z_lr", "z_noisy", "eps_hat", "z0", "sr"]


def check_case(case_dir):
    """Per-stage max abs differences of one case: `{"preset", "stages": {...}, "max_abs_diff"}`."""
    with safe_open(os.path.join(case_dir, "case.safetensors"), framework="pt") as f:
        header = json.loads(f.metadata()["gdpo_sr_parity"])
        burn = {k: f.get_tensor(k) for k in f.keys()}
    model = ref.load_weights(os.path.join(case_dir, header["weights"]))
    model.eval()
    assert header["colour_fix"] == "none" and not header["tiled"], "untiled, no colour fix only"
    assert header["first_stream"] == 0
    stages = {}
    with torch.no_grad():
        model.upscale(burn["lr"], scale=header["scale"], seed=header["seed"],
                      t_add=header["t_add"], t_diff=header["t_diff"], stages=stages)
    diffs = {k: float((stages[k] - burn[k]).abs().max()) for k in STAGES}
    scale = {k: float(burn[k].abs().max()) for k in STAGES}
    return {"preset": header["preset"], "case": case_dir, "stages": diffs,
            "stage_max_abs": scale, "max_abs_diff": max(diffs.values()),
            "clamped_fraction": header["clamped_fraction"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", required=True, help="case folder")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float32)
    results, ok = [], True
    for case in args.case:
        r = check_case(case)
        results.append(r)
        print(f"{r['preset']} ({case}): max abs diff {r['max_abs_diff']:.3e}")
        for k in STAGES:
            flag = "" if r["stages"][k] <= args.tolerance else "  > tolerance"
            print(f"  {k:8s} {r['stages'][k]:.3e}  (|burn| max {r['stage_max_abs'][k]:.3g})"
                  f"{flag}")
        ok &= r["max_abs_diff"] <= args.tolerance
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print("parity OK" if ok else f"parity FAILED (tolerance {args.tolerance:g})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
