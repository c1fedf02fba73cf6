#!/usr/bin/env bash
# One lent-GPU call for the CIFAR-10 cells of the reproduction (scripts/reproduce.py, one seed):
# Table 2's four torchvision baselines, and the Table 1 and ablation cells that the CPU had not
# measured. Three sweeps share the GPU: the baselines (CE and MS), the small models' CE cells,
# then their MS cells, which start when the CE cells are done (MS steps synchronise the GPU
# several times each, and crawl when many processes time-slice it). Every cell stops at an epoch
# end when the time budget is spent (a † cell in the tables); metrics and logs are packed into
# $OUT every 30 s, so that a call cut off early still brings back what was measured.
#
# As run for results/ (one H100 session): `BUDGET_S=455 bash scripts/device_cifar.sh` trained the
# baselines and the CE cells, which used the whole budget (the MS sweep started nothing); a second
# call on the warm machine ran the eight GELU MS cells alone:
#   BUDGET_S=225 BASELINES=cifar10-hybrid1-ce-gelu SMALL_CE=cifar10-cnn3a-ce-gelu \
#   SMALL_MS=cifar10-cnn3b-ms,cifar10-inn2-ms,cifar10-inn3-ms,cifar10-inn4-ms,cifar10-hybrid2-ms,cifar10-hybrid3-ms,cifar10-hybrid1-ms-gelu,cifar10-cnn3a-ms-gelu \
#   bash scripts/device_cifar.sh
# (the two named finished cells make the first two sweeps no-ops).
#
#   .gpu/ (git-ignored) holds cifar10-jpeg.tar.gz and cifar10_jpeg_to_npz.py (from
#   ../shared/datasets) and whl/ (pytorch-metric-learning's wheel).
#   On the GPU machine:  BUDGET_S=470 bash scripts/device_cifar.sh
#   A dry run here, in a copy of the checkout (it overwrites the named cells' runs):
#     QUICK=1 BASELINES=cifar10-mobilenet_v2-ce SMALL_CE=cifar10-inn2-ce SMALL_MS=cifar10-inn2-ms \
#     BUDGET_S=300 OUT=/tmp/out PY=$PWD/.venv/bin/python bash scripts/device_cifar.sh
set -u
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-470}   # training seconds; then cells stop at their next epoch end
OUT=${OUT:-/tmp/device-out}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 TQDM_DISABLE=1  # logs: one line per epoch
mkdir -p "$OUT" .gpu/data results/runs

if [ -d .gpu/whl ] && ! $PY -c "import pytorch_metric_learning" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PY -c "import torch, torchvision, pytorch_metric_learning as p; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'pml', p.__version__, 'cuda', torch.cuda.is_available())"
[ -f .gpu/data/cifar10.npz ] || $PY .gpu/cifar10_jpeg_to_npz.py .gpu/cifar10-jpeg.tar.gz .gpu/data/cifar10.npz || exit 1
# An unfinished cell whose resume/ state stayed behind (CIFAR-10 Hybrid-3 CE, 14 of 25 epochs
# on the CPU) starts again from scratch here, on one device; finished cells are skipped.

if [ -n "${QUICK:-}" ]; then
    COMMON=(--quick --device cpu --seeds 1)
    BASELINE_JOBS=2 SMALL_JOBS=2
else
    COMMON=(--seeds 1)
    BASELINE_JOBS=8 SMALL_JOBS=10
fi
# --only prefixes (a dry run can name fewer)
BASELINES=${BASELINES:-cifar10-mobilenet_v2,cifar10-efficientnet_b0,cifar10-resnet50,cifar10-vgg16}
SMALL_CE=${SMALL_CE:-cifar10-cnn3b-ce,cifar10-inn2-ce,cifar10-inn3-ce,cifar10-inn4-ce,cifar10-hybrid2-ce,cifar10-hybrid3-ce,cifar10-hybrid1-ce-relu,cifar10-cnn3a-ce-relu}
SMALL_MS=${SMALL_MS:-cifar10-cnn3b-ms,cifar10-inn2-ms,cifar10-inn3-ms,cifar10-inn4-ms,cifar10-hybrid2-ms,cifar10-hybrid3-ms,cifar10-hybrid1-ms,cifar10-cnn3a-ms}

minutes_left() { awk -v s=$((T0 + BUDGET_S - $(date +%s))) 'BEGIN { printf "%.2f", s / 60 }'; }
pack() {  # metrics and logs of the CIFAR-10 cells; weights of the small models only (Figure 3)
    tar czf "$OUT/cifar.tgz.tmp" --exclude='resume*' --exclude='*.safetensors' results/runs/cifar10-* 2>/dev/null \
        && mv "$OUT/cifar.tgz.tmp" "$OUT/cifar.tgz"
    tar czf "$OUT/weights.tgz.tmp" --exclude='resume*' $(ls -d results/runs/cifar10-hybrid*-s0 2>/dev/null) 2>/dev/null \
        && mv "$OUT/weights.tgz.tmp" "$OUT/weights.tgz"
}
(while sleep 30; do pack; done) &
PACKER=$!

sweep() {  # log name, --only prefixes, jobs
    $PY scripts/reproduce.py --data-dir .gpu/data --results /tmp/tables --only "$2" --jobs "$3" \
        --time-budget "$(minutes_left)" "${COMMON[@]}" > "$OUT/$1.log" 2>&1
}
mkdir -p /tmp/tables
sweep baselines "$BASELINES" "$BASELINE_JOBS" &
BASELINE_SWEEP=$!
(sweep small-ce "$SMALL_CE" "$SMALL_JOBS"; sweep small-ms "$SMALL_MS" "$SMALL_JOBS") &
SMALL_SWEEPS=$!
wait $BASELINE_SWEEP $SMALL_SWEEPS
kill $PACKER 2>/dev/null
pack
cat "$OUT"/*.log
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv 2>/dev/null
ls -la "$OUT"
echo "total $(($(date +%s) - T0)) s"
