cd "$(dirname "$0")/../../.."
date -u; uptime
export LD_LIBRARY_PATH=$PWD/.venv-bench/libtorch/lib
.venv-bench/bin/python tests/pytorch/bench_torch.py --json target/bench/r9-torch.json --inputs 256x256 --repeats 9 --skip breakdown,ops,flops 2>&1 | grep -v '^ '
target/debug/trainer-native bench steps --preset taef2 --backend tch --inputs 256x256 --repeats 9 --skip breakdown,ops --json target/bench/r9-steps-tch.json 2>&1 | grep -v '^ '
date -u; uptime
