#!/usr/bin/env bash
# Train recipes on a lent GPU (an H200 or H100 with the device image: Python 3.12, torch 2.11,
# no pytorch-metric-learning, tomlkit or umap-learn), in device calls of at most 10 minutes.
#
#   bash scripts/gpu_train.sh --prepare        # here: wheels and the CIFAR-10 archive into ignored folders
#   device run: bash scripts/gpu_train.sh recipes/cifar10-hybrid1.toml recipes/cifar10-cnn3a.toml
#               with carry [".whl", ".gpu-data", "runs"], timeout 600 s
#
# Each recipe trains into runs/<name> with --time-budget (default 8 minutes), all at once on the
# one GPU; a run brought back in runs/ is resumed. $OUT/runs gets every run folder: copy it back
# to runs/ and call again until each holds metrics.json. The device image has no umap-learn, so
# the runs skip the demo's search bundle: build it here with `python -m model.index --checkpoint
# runs/<name>` before moving a finished folder into assets/.
# GPU_TRAIN_DEVICE and GPU_TRAIN_ARGS (e.g. "--quick") let the same script run on a CPU as a test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    -d .whl pytorch-metric-learning==2.9.0 tomlkit==0.14.0
  mkdir -p .gpu-data
  cp ../shared/datasets/cifar10-jpeg.tar.gz ../shared/datasets/cifar10_jpeg_to_npz.py .gpu-data/
  du -sh .whl .gpu-data
  exit 0
fi

: "${OUT:?run this on the device machine, where OUT is set}"
[ "$#" -gt 0 ] || { echo "name the recipes to train: recipes/*.toml" >&2; exit 2; }
if ! python3 -c 'import pytorch_metric_learning, tomlkit' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
data=/tmp/gpu-train-data
mkdir -p "$data" runs "$OUT/runs"
[ -f "$data/cifar10.npz" ] || python3 .gpu-data/cifar10_jpeg_to_npz.py .gpu-data/cifar10-jpeg.tar.gz "$data/cifar10.npz"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true
pids=()
for recipe in "$@"; do
  name=$(basename "$recipe" .toml)
  if [ -f "runs/$name/metrics.json" ]; then echo "$name: finished"; continue; fi
  if [ -d "runs/$name/work" ]; then resume=(--resume); else resume=("$recipe"); fi
  python3 train.py "${resume[@]}" --out "runs/$name" --data-dir "$data" --no-index \
    --device "${GPU_TRAIN_DEVICE:-cuda}" --time-budget "${GPU_TRAIN_MINUTES:-8}" ${GPU_TRAIN_ARGS:-} \
    > "$OUT/$name.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
cp -r runs/. "$OUT/runs/"
tail -n 3 "$OUT"/*.log
exit $status
