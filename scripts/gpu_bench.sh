#!/usr/bin/env bash
# The GPU figures of scripts/bench_train.py in one device call (an H200 or H100 with the device
# image: Python 3.12, torch 2.11, no pytorch-metric-learning).
#
#   bash scripts/gpu_bench.sh --prepare     # here: the wheel and the CIFAR-10 archive into ignored folders
#   device run: bash scripts/gpu_bench.sh   with carry [".whl", ".gpu-data"], timeout 600 s
#
# It decodes CIFAR-10 there (the decoded .npz is too large to carry), runs the benchmark with
# the compiled step, the sync check and 8 parallel runs, and leaves results/bench_train.json and
# the log under $OUT. Copy $OUT/bench_train.json to results/ to commit it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    -d .whl pytorch-metric-learning==2.9.0
  mkdir -p .gpu-data
  cp ../shared/datasets/cifar10-jpeg.tar.gz ../shared/datasets/cifar10_jpeg_to_npz.py .gpu-data/
  du -sh .whl .gpu-data
  exit 0
fi

: "${OUT:?run this on the device machine, where OUT is set}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
mkdir -p /tmp/data
python3 .gpu-data/cifar10_jpeg_to_npz.py .gpu-data/cifar10-jpeg.tar.gz /tmp/data/cifar10.npz
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv | tee "$OUT/gpu.txt"
python3 scripts/bench_train.py --data-dir /tmp/data --device cuda --out "$OUT/bench_train.json" 2>&1 \
  | tee "$OUT/bench_train.log"
