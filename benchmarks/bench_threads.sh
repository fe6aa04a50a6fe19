#!/bin/bash
# Usage: benchmarks/bench_threads.sh [CACHE_DIR]   (PYTHON=path/to/python to choose the interpreter)
# pipeline train on a synthetic cache (40 videos x 300 frames x 1000): epoch-2 windows/s, default threads vs 2,
# without and with a busy loop (`python -c "while True: pass"`) beside it. The machine is shared: load average logged.
cd "$(dirname "$0")/.." && export PYTHONPATH=$PWD
P=${PYTHON:-python}
C=${1:-/tmp/bench_threads_cache}
[ -d $C ] || $P benchmarks/bench_train.py --make-cache $C --videos 40 --frames 300
run() { rm -rf ${C}_run; $P -m pipeline train $C --out ${C}_run --epochs 2 --device cpu "$@" 2>/dev/null | grep "^epoch 2" | sed 's/.*(\(.*windows\/s\)).*/\1/'; }
for rep in 1 2; do
  for busy in no yes; do
    if [ $busy = yes ]; then $P -c "while True: pass" & B=$!; sleep 1; fi
    d=$(run); t2=$(run --threads 2); t1=$(run --threads 1)
    echo "rep $rep busy=$busy default: $d | --threads 2: $t2 | --threads 1: $t1 | load $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ $busy = yes ]; then kill $B; wait $B 2>/dev/null; fi
  done
done
