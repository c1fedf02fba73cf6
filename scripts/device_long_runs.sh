#!/usr/bin/env bash
# The second lent-GPU call of the session behind the shipped weights (after device_sweep.sh):
# four runs at once on the GPU, each stopped at an epoch end by --time-budget. All four finished
# within it. They became assets/mnist-hybrid1, assets/mnist-cnn3a, assets/fashion_mnist-hybrid1
# and assets/cifar10-hybrid1; the search bundles were rebuilt afterwards on a CPU with
# `python -m model.index --checkpoint assets/<name> --data-dir DIR`.
#
#   .gpu/data holds mnist.npz, fashion_mnist.npz, cifar10.npz; .gpu/whl the
#   pytorch-metric-learning wheel (see device_sweep.sh).  On the GPU machine:
#   bash scripts/device_long_runs.sh
set -u
PY=${PY:-python3}
if ! $PY -c "import pytorch_metric_learning" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export TQDM_DISABLE=1 OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p .gpu/long2
run() {
    local name=$1; shift
    $PY train.py --data-dir .gpu/data --no-index --out ".gpu/long2/$name" --time-budget "${MINUTES:-3.6}" "$@" \
        > ".gpu/long2/$name.log" 2>&1 &
}
DIGITS=(--loss ms --batch-size 128 --schedule cosine --augment shift)
run mnist-ms --dataset mnist --model hybrid1 --epochs 20 "${DIGITS[@]}"
run mnist-ms-cnn3a --dataset mnist --model cnn3a --epochs 20 "${DIGITS[@]}"
run fashion-ms --dataset fashion_mnist --model hybrid1 --epochs 25 "${DIGITS[@]}"
run cifar10-ce --dataset cifar10 --model hybrid1 --loss ce --epochs 100 --batch-size 256 --schedule cosine \
    --label-smoothing 0.1 --augment crop-flip
wait
tail -n 2 .gpu/long2/*.log
