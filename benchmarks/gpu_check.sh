#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU box (16 cores, no network): the CUDA-path tests,
# feature accuracy of every --precision, and bench_extract at 320x240 (default workers, then 13 on
# the same videos) and 720p. Run from the repo root; decord and PyAV wheels for the box's Python
# (3.12 there) travel in .whl/, fetched beforehand on a machine with pip access:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2010_x86_64 -d .whl decord==0.6.0 av==18.1.0
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; lscpu | grep -E "Model name|^CPU\(s\)|Thread"; nproc;
  python3 -c "import torch, torchvision, decord, h5py; print(torch.__version__, torchvision.__version__, decord.__version__, h5py.__version__)"; } 2>&1 | tee "$OUT/machine.txt"
python3 -m pytest -q tests/test_cuda.py tests/test_extract.py tests/test_video.py 2>&1 | tee "$OUT/tests.txt"
python3 benchmarks/precision_check.py 2>&1 | tee "$OUT/precision.txt"
B="python3 benchmarks/bench_extract.py --cnn-seconds 5"
{ $B --size 320x240 --videos 96 --seconds 30 --folder /tmp/v320; $B --folder /tmp/v320 --workers 13; } 2>&1 | tee "$OUT/bench_320x240.txt"
$B --size 720p --videos 32 --seconds 20 --folder /tmp/v720 2>&1 | tee "$OUT/bench_720p.txt"
