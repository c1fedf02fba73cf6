#!/usr/bin/env bash
# One lent-GPU session, as it was run for results/ and the long Hybrid-1 runs: the
# reproduction sweep (scripts/reproduce.py, several cells at once) beside long-schedule
# Hybrid-1 runs, all stopped at an epoch end when the time budget is spent, results packed
# into $OUT every minute so that a cut-off call still brings them back. Its long run
# fashion-ce-cnn3a became assets/fashion_mnist-cnn3a; the others were cut by the budget and
# informed the recipes of scripts/device_long_runs.sh, the session's second call.
#
#   .gpu/ (git-ignored) holds mnist.npz, fashion_mnist.npz, cifar10-jpeg.tar.gz,
#   cifar10_jpeg_to_npz.py (from ../shared/datasets) and whl/ (pytorch-metric-learning's wheel).
#   On the GPU machine:  BUDGET_S=480 bash scripts/device_sweep.sh
#   A dry run here:      QUICK=1 BUDGET_S=60 OUT=/tmp/out bash scripts/device_sweep.sh
set -u
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-480}   # training seconds; then runs stop at their next epoch end
JOBS=${JOBS:-9}            # sweep cells trained at once
OUT=${OUT:-/tmp/device-out}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 TQDM_DISABLE=1  # logs: one line per epoch
mkdir -p "$OUT" .gpu/data .gpu/long results/runs

if [ -d .gpu/whl ] && ! $PY -c "import pytorch_metric_learning" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PY -c "import torch, torchvision, pytorch_metric_learning as p; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'pml', p.__version__, 'cuda', torch.cuda.is_available())"

ln -sf ../mnist.npz .gpu/data/mnist.npz
ln -sf ../fashion_mnist.npz .gpu/data/fashion_mnist.npz
[ -f .gpu/data/cifar10.npz ] || $PY .gpu/cifar10_jpeg_to_npz.py .gpu/cifar10-jpeg.tar.gz .gpu/data/cifar10.npz &
CONVERT=$!

if [ -n "${QUICK:-}" ]; then
    SWEEP_ARGS=(--quick --device cpu --seeds 1 --only mnist-hybrid1)
    LONG_ARGS=(--device cpu --max-train-samples 2000 --epochs 2)
    JOBS=2
else
    SWEEP_ARGS=(--seeds 3 --baseline-epochs 10)
    LONG_ARGS=()
fi

minutes_left() { awk -v s=$((T0 + BUDGET_S - $(date +%s))) 'BEGIN { printf "%.2f", s / 60 }'; }

pack() {  # metrics and logs of every run, weights of the small CIFAR-10 paper models and the long runs
    tar czf "$OUT/sweep.tgz.tmp" --exclude='resume*' --exclude='*.safetensors' results/runs results/*.md results/*.png 2>/dev/null \
        && mv "$OUT/sweep.tgz.tmp" "$OUT/sweep.tgz"
    tar czf "$OUT/weights.tgz.tmp" --exclude='resume*' .gpu/long $(ls -d results/runs/cifar10-hybrid*-gelu-s0 2>/dev/null) 2>/dev/null \
        && mv "$OUT/weights.tgz.tmp" "$OUT/weights.tgz"
}

long() {  # name, then train.py arguments: a long-schedule run (Hybrid-1 unless --model says otherwise)
    local name=$1; shift
    $PY train.py --data-dir .gpu/data --no-index --model hybrid1 --out ".gpu/long/$name" \
        --time-budget "$(minutes_left)" "${LONG_ARGS[@]}" "$@" > ".gpu/long/$name.log" 2>&1 &
}

long mnist-ce --dataset mnist --loss ce --epochs 40 --batch-size 128 --schedule cosine --augment shift
long mnist-ms --dataset mnist --loss ms --epochs 40 --batch-size 128 --schedule cosine --augment shift
long fashion-ce --dataset fashion_mnist --loss ce --epochs 50 --batch-size 128 --schedule cosine --augment shift
long fashion-ms --dataset fashion_mnist --loss ms --epochs 50 --batch-size 128 --schedule cosine --augment shift
long mnist-ce-cnn3a --dataset mnist --loss ce --epochs 40 --batch-size 128 --schedule cosine --augment shift --model cnn3a
long fashion-ce-cnn3a --dataset fashion_mnist --loss ce --epochs 50 --batch-size 128 --schedule cosine --augment shift --model cnn3a
wait $CONVERT
CIFAR_RECIPE=(--dataset cifar10 --loss ce --epochs 120 --batch-size 256 --schedule cosine --label-smoothing 0.1 --augment crop-flip)
long cifar10-ce "${CIFAR_RECIPE[@]}"
long cifar10-ce-cnn3a "${CIFAR_RECIPE[@]}" --model cnn3a

(while sleep 60; do pack; done) &
PACKER=$!

$PY scripts/reproduce.py --data-dir .gpu/data --jobs "$JOBS" --time-budget "$(minutes_left)" "${SWEEP_ARGS[@]}" \
    2>&1 | tee "$OUT/sweep.log"

# the long runs stop at their own budget; wait for them, but not past BUDGET_S + 60 s
while pgrep -f "train.py --data-dir .gpu/data" > /dev/null && [ $(($(date +%s) - T0)) -lt $((BUDGET_S + 60)) ]; do
    sleep 2
done
pkill -INT -f "train.py --data-dir .gpu/data"
sleep 3
kill $PACKER 2>/dev/null
for f in .gpu/long/*.log; do echo "== $f"; tail -3 "$f"; done | tee "$OUT/long.log"
pack
ls -la "$OUT"
echo "total $(($(date +%s) - T0)) s"
