set -x
cd "$(dirname "$0")/../../../.."
T=$(pgrep -f 'runs/piece-.*/trainer-native naosd')
P="$(pgrep -f 'peer-upscale|chromium|quality.sh') "
kill -STOP $T $P
sleep 3
uptime
OLD=$(ls runs/piece-*/trainer-native | head -1)
export LD_LIBRARY_PATH=$PWD/.venv-bench/libtorch/lib
for round in 1 2; do
$OLD bench steps --preset taef2 --backend tch --batch 1 --crop 64 --skip inference,breakdown,ops --repeats 10 --json target/bench-gdpo/old-$round.json 2>&1 | grep -E 'step'
target/debug/trainer-native bench steps --preset taef2 --backend tch --batch 1 --crop 64 --skip inference,breakdown,ops --repeats 10 --json target/bench-gdpo/new-$round.json 2>&1 | grep -E 'step'
.venv-bench/bin/python tests/pytorch/bench_torch.py --batch 1 --crop 64 --skip inference,breakdown,flops,ops --repeats 10 --json target/bench-gdpo/torch-$round.json 2>&1 | grep -E 'step'
done
uptime
kill -CONT $T $P
