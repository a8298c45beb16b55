#!/usr/bin/env bash
# Issue 4's "done when" on the shared Omniglot data: mtl pretrain → mtl meta-train --algorithm mtl →
# mtl export (float and int8) → in a virtual environment WITHOUT torch: bundle verify, adapt, predict.
# Each model is evaluated 5-way 1-shot on the test alphabets over the same 600 episodes (seed 0), the
# bundles through the device runtime, so checkpoint and bundle accuracies compare directly.
# Usage: bash benchmarks/omniglot_chain.sh [OUT_DIR] [ITERATIONS]   (about 5 minutes on 2 CPU cores)
set -euo pipefail
OUT=${1:-runs/omniglot-chain}
ITERS=${2:-300}
DATA=omniglot:../shared/data/omniglot
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
[ -f "$OUT/pretrain/best.safetensors" ] || $BIN/mtl pretrain --data "$DATA" --backbone conv4 --epochs 10 --rotations \
    --out "$OUT/pretrain" -q
[ -f "$OUT/mtl/best.safetensors" ] || $BIN/mtl meta-train --data "$DATA" --algorithm mtl --init "$OUT/pretrain" \
    --head-init proto --ways 5 --shots 1 --meta-batch 4 --inner-steps 5 --inner-lr 0.1 --iterations "$ITERS" \
    --val-every 100 --out "$OUT/mtl" -q
$BIN/mtl export "$OUT/mtl" --out "$OUT/bundle.mtlb" --single-file
$BIN/mtl export "$OUT/mtl" --out "$OUT/bundle-int8.mtlb" --single-file --quantize int8
for model in pretrain mtl bundle.mtlb bundle-int8.mtlb; do
  $BIN/mtl evaluate "$OUT/$model" --ways 5 --shots 1 --episodes 600
done
# the device: 5 test characters it never saw, 5 drawings each to adapt, 2 more each to predict
rm -rf "$OUT/new-classes"
$BIN/python -m mtl.pipeline.data.dump "$OUT/pretrain" --out "$OUT/new-classes" --ways 5 --shots 5 --queries 2
[ -x "$OUT/device-venv/bin/python" ] || python3 -m venv "$OUT/device-venv"
"$OUT/device-venv/bin/python" -m pip install --quiet .  # the base install only: what a device gets
"$OUT/device-venv/bin/python" -c "import importlib.util as u; assert u.find_spec('torch') is None, 'torch present'"
"$OUT/device-venv/bin/mtl" bundle verify "$OUT/bundle.mtlb"
"$OUT/device-venv/bin/mtl" adapt "$OUT/bundle.mtlb" "$OUT/new-classes/support" --out "$OUT/adapted"
"$OUT/device-venv/bin/mtl" predict "$OUT/adapted" "$OUT"/new-classes/query/*/*.png
