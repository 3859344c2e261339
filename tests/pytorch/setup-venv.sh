#!/usr/bin/env bash
# Creates .venv-bench/ at the repository root with the pinned PyTorch CPU stack of
# tests/pytorch/requirements.txt, from pypi.org only: the Python reference of the benchmarks
# and parity tests, and the LibTorch that trainer-native's `tch` feature (burn-tch 0.21, which
# expects torch 2.9.0) links: .venv-bench/libtorch points at the wheel's torch folder
# (include/, lib/), where .cargo/config.toml's LIBTORCH looks. Idempotent: does nothing when the venv
# already holds exactly these requirements. PYTHON picks the interpreter (>= 3.11, torch's
# minimum; default python3).
#
# Why `--no-deps`: PyPI's Linux torch wheel is the CUDA build and declares ~4.5 GB of CUDA
# wheels (triton, cuda-toolkit, cuda-bindings, cusolver, ...). The CPU-only wheel lives on
# download.pytorch.org, which is not reachable here. Installing torch without its declared
# dependencies fails at `import torch` (libtorch_cpu.so itself links libcudart and libcupti),
# so requirements.txt lists exactly the CUDA libraries torch's shared objects link against
# plus its pure-Python dependencies: ~4 GB on disk instead of ~5.5 GB, and nothing CUDA ever
# runs (the benchmarks use the CPU).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=$root/.venv-bench
requirements=$root/tests/pytorch/requirements.txt
stamp=$venv/.requirements-installed
python=${PYTHON:-python3}

if [[ -f $stamp ]] && cmp -s "$stamp" "$requirements" && [[ -x $venv/bin/python ]] &&
    [[ -f $venv/libtorch/lib/libtorch_cpu.so ]]; then
    echo "setup-venv: $venv is up to date"
    exit 0
fi
if [[ ! -x $venv/bin/python ]]; then
    "$python" -m venv "$venv"
fi
# Keeps the 4 GB venv out of git whatever the repository's .gitignore says (Python >= 3.13
# writes this file itself).
echo '*' >"$venv/.gitignore"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    -r "$requirements"
"$venv/bin/python" - <<'PY'
import torch, numpy, safetensors
from torch.utils.flop_counter import FlopCounterMode  # noqa: F401
x = torch.randn(2, 3, 8, 8, requires_grad=True)
torch.nn.functional.conv2d(x, torch.randn(4, 3, 3, 3)).sum().backward()
assert x.grad is not None
print(f"setup-venv: torch {torch.__version__} on CPU, {torch.get_num_threads()} threads")
PY
torch_dir=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ln -sfn "$torch_dir" "$venv/libtorch"
cp "$requirements" "$stamp"
