cd "$(dirname "$0")/../../.."
T=$(pgrep -f 'runs/piece-.*/trainer-native naosd')
P="$(pgrep -f 'peer-upscale|chromium|quality.sh')"
trap 'kill -CONT $T $P' EXIT
kill -STOP $T $P
sleep 2
export LD_LIBRARY_PATH=$PWD/.venv-bench/libtorch/lib
for r in 1 2; do
.venv-bench/bin/python tests/pytorch/bench_torch.py --json target/bench/gdpo-torch-$r.json --batch 1 --crop 64 --repeats 15 --skip inference,breakdown,ops,flops 2>&1 | grep gdpo
target/debug/trainer-native bench steps --preset taef2 --backend tch --batch 1 --crop 64 --repeats 15 --skip inference,breakdown,ops --json target/bench/gdpo-tch-$r.json 2>&1 | grep gdpo
done
