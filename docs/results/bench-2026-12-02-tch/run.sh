cd "$(dirname "$0")/../../.."
T=$(pgrep -f 'runs/piece-.*/trainer-native naosd')
P="$(pgrep -f 'peer-upscale|chromium|quality.sh')"
trap 'kill -CONT $T $P' EXIT
kill -STOP $T $P
sleep 2
date -u; uptime
export LD_LIBRARY_PATH=$PWD/.venv-bench/libtorch/lib
.venv-bench/bin/python tests/pytorch/bench_torch.py --json target/bench/torch.json --inputs 256x256 --skip breakdown,ops,flops 2>&1 | grep -v '^ '
for b in tch cpu; do
  target/debug/trainer-native bench steps --preset taef2 --backend $b --inputs 256x256 --skip breakdown,ops --json target/bench/steps-$b.json 2>&1 | grep -v '^ '
done
date -u; uptime
