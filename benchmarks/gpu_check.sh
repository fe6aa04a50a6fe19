#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU box (16 cores, no network): bench_extract at 720p and
# 320x240 for this code and for the code at e103401 on the same videos (first: the figures a GPU box
# is for), then the CUDA-path tests (the GPU converts and resizes the decoded YUV frames there) and
# the feature error of every --precision. Run from the repo root. Before, on a machine with pip and git:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl decord2==3.4.0 av==18.1.0
#   mkdir -p .old && git archive e103401 | tar -x -C .old     # the old code, to compare with
# and carry .whl and .old (both git-ignored); PREV=.prev adds the tree in .prev to the comparison.
# About 6 minutes on an H100 box; each step has a time limit, so one that hangs leaves the others'.
# VIDEOS720=N: that many 720p clips of 20 s (default 32; more makes the start-up a smaller share).
# PROFILE=1: then one more 720p run of this tree under py-spy (its wheel in .whl too: pip download
# --no-deps --only-binary=:all: --platform manylinux_2_5_x86_64 --python-version 3.12 --implementation py
# --abi none -d .whl py-spy), raw stacks of every thread and worker in $OUT/pyspy_720p.txt: where the
# main thread's time goes while extract runs (about 1.5 minutes more).
# SHM64=1: then the 720p run once more, of this tree and $PREV's, in a 64 MB /dev/shm (Docker's default;
# needs root for unshare and mount): there this tree's slots shrink to fit, where $PREV's decoded in
# the main process (about 1 minute more per tree).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
NEW=${PYTHONPATH:+$PYTHONPATH:}$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; lscpu | grep -E "Model name|^CPU\(s\)|Thread"; nproc; df -h /dev/shm;
  PYTHONPATH=$NEW python3 -c "import torch, torchvision, decord, av, h5py; print(torch.__version__, torchvision.__version__, decord.__version__, av.__version__, h5py.__version__)"; } 2>&1 | tee "$OUT/machine.txt"
B="python3 benchmarks/bench_extract.py --cnn-seconds 4"
N720=${VIDEOS720:-32}
SLACK=$((2 * N720))  # seconds more for each step at 720p: making and extracting more clips
for size in "720p --videos $N720 --seconds 20" "320x240 --videos 96 --seconds 30"; do
  name=${size%% *}
  folder=/tmp/v${name}_${size#* --videos }; folder=${folder%% *}  # one folder per clip count: never stale clips
  extra=$([ "$name" = 720p ] && echo $SLACK || echo 0)
  PYTHONPATH=$NEW timeout $((150 + extra)) $B --size $size --folder $folder 2>&1 | tee "$OUT/bench_$name.txt"
  for tree in .old ${PREV:-}; do  # the old tree's bench_extract (and $PREV's, another tree), on the same clips
    [ -d "$tree" ] || continue
    (cd "$tree" && PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD timeout $((90 + extra)) $B --folder $folder) 2>&1 | tee "$OUT/bench_${name}_${tree#.}.txt"
  done
done
if [ -n "${PROFILE:-}" ]; then  # --idle: waiting (on workers, on the GPU) is what the profile is for
  if [ -x /tmp/site/bin/py-spy ]; then
    PYTHONPATH=$NEW timeout $((150 + SLACK)) /tmp/site/bin/py-spy record --idle --rate 50 --format raw --threads \
      --subprocesses --output "$OUT/pyspy_720p.txt" -- $B --size 720p --folder /tmp/v720p_$N720 2>&1 | tail -20 \
      | tee "$OUT/pyspy_720p_log.txt"
  else
    echo "PROFILE=1, but no py-spy wheel in .whl: no profile" | tee "$OUT/pyspy_720p_log.txt"
  fi
fi
if [ -n "${SHM64:-}" ]; then
  for tree in . ${PREV:-}; do
    [ -d "$tree" ] || continue
    (cd "$tree" && unshare -m sh -c "mount -t tmpfs -o size=64m tmpfs /dev/shm && df -h /dev/shm && \
      PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD timeout $((90 + SLACK)) $B --folder /tmp/v720p_$N720") 2>&1 \
      | tee "$OUT/bench_720p_shm64_$([ "$tree" = . ] && echo this || echo "${tree#.}").txt"
  done
fi
PYTHONPATH=$NEW timeout 150 python3 -m pytest -q -x tests/test_cuda.py tests/test_extract.py 2>&1 | tee "$OUT/tests.txt"
PYTHONPATH=$NEW timeout 60 python3 -m pytest -q tests/test_reliability.py -k "dev_shm or slots" 2>&1 | tee "$OUT/tests_shm.txt"
[ -n "${SKIP_PRECISION:-}" ] || PYTHONPATH=$NEW timeout 60 python3 benchmarks/precision_check.py 2>&1 | tee "$OUT/precision.txt"
