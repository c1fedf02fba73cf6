#!/usr/bin/env bash
# The reproduction sweep (results/reproduce.py: 68 cells x 3 seeds) on a lent GPU.
#
# A call carries at most 64 MiB with the working tree (about 24 MB), so the data go in two calls:
#   bash results/gpu_sweep.sh --prepare mnist,fashion_mnist   # here: 42 MB of data + the wheel
#   device run: bash results/gpu_sweep.sh mnist,fashion_mnist  carry [".whl", ".gpu-data"], timeout 600
#   bash results/gpu_sweep.sh --prepare cifar10                 # here: the 19 MB CIFAR-10 archive
#   device run: bash results/gpu_sweep.sh cifar10               carry [".whl", ".gpu-data"], timeout 600
# Each call trains its datasets' cells afresh in /tmp/runs (one device, one precision: bf16 on
# CUDA), JOBS at a time (default 16), starts no cell after BUDGET_MIN minutes (default 8.5), and
# returns $OUT/runs.tar.gz (every cell's metrics.json), the tables and the log. Here, afterwards:
# `tar xzf runs.tar.gz -C results/runs` (after moving the old records away); any later
# reproduce.py run rewrites the tables from the records. A cell cut by the budget is marked
# reduced. The involution-as-spatial-mixer claim's cells (results/claims.json; 15 epochs each):
#   device run: SWEEP_ARGS="--claims --only fashion_mnist-compact" bash results/gpu_sweep.sh fashion_mnist
#   then `tar xzf runs.tar.gz -C results/claims/runs` here and `python results/reproduce.py --claims
#   --time-budget 0` rewrites claims.json (checked here as a --quick CPU dry run: 6 cells, 2 at a time).
# SWEEP_ARGS adds options, e.g. a dry run here on the CPU:
#   OUT=/tmp/o SWEEP_ARGS="--quick --device cpu --max-train-samples 200" BUDGET_MIN=1 JOBS=2 \
#     bash results/gpu_sweep.sh mnist
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  IFS=, read -r -a sets <<< "${2:?name the datasets: mnist,fashion_mnist or cifar10}"
  rm -rf .gpu-data && mkdir -p .gpu-data
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    -d .whl pytorch-metric-learning==2.9.0
  for d in "${sets[@]}"; do
    case "$d" in
      cifar10) cp ../shared/datasets/cifar10-jpeg.tar.gz ../shared/datasets/cifar10_jpeg_to_npz.py .gpu-data/ ;;
      mnist|fashion_mnist) cp "../shared/datasets/$d.npz" .gpu-data/ ;;
      *) echo "unknown dataset $d: use mnist, fashion_mnist or cifar10" >&2; exit 2 ;;
    esac
  done
  du -sh .whl .gpu-data
  exit 0
fi

: "${OUT:?run this on the device machine, where OUT is set}"
IFS=, read -r -a sets <<< "${1:?name the datasets: mnist,fashion_mnist or cifar10}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
mkdir -p /tmp/data
cp .gpu-data/*.npz /tmp/data/ 2>/dev/null || true
if [ -f .gpu-data/cifar10-jpeg.tar.gz ]; then
  python3 .gpu-data/cifar10_jpeg_to_npz.py .gpu-data/cifar10-jpeg.tar.gz /tmp/data/cifar10.npz
fi
only="$(printf '%s-,' "${sets[@]}")"
python3 results/reproduce.py --data-dir /tmp/data --seeds 3 --jobs "${JOBS:-16}" --time-budget "${BUDGET_MIN:-8.5}" \
  --only "${only%,}" --out /tmp/runs --results "$OUT" --pack "$OUT/runs.tar.gz" ${SWEEP_ARGS:-} 2>&1 \
  | tee "$OUT/sweep.log"
