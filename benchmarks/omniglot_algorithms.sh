#!/usr/bin/env bash
# Every meta-training algorithm on the shared Omniglot data after the SAME short budget, then
# 5-way 1-shot and 20-way 1-shot accuracy (600 episodes, seed 0) on the test alphabets.
# Usage: bash benchmarks/omniglot_algorithms.sh [OUT_DIR] [ITERATIONS]   (CPU-sized defaults)
# EPISODES_5 / EPISODES_20 (default 600) set the evaluation episodes of each column.
set -euo pipefail
OUT=${1:-runs/omniglot-algorithms}
ITERS=${2:-200}
DATA=omniglot:../shared/data/omniglot
MTL=${MTL:-.venv/bin/mtl}
COMMON=(--data "$DATA" --ways 5 --shots 1 --queries 15 --meta-batch 4 --inner-steps 1 --iterations "$ITERS"
        --val-every 100 --val-episodes 50 --rotations -q)
mkdir -p "$OUT"
[ -f "$OUT/pretrain/best.safetensors" ] || $MTL pretrain --data "$DATA" --epochs 10 --rotations --out "$OUT/pretrain" -q
for alg in maml fomaml reptile metasgd anil protonet mtl joint; do
  [ -f "$OUT/$alg/best.safetensors" ] && continue
  case $alg in
    fomaml) args=(--algorithm maml --first-order) ;;
    reptile) args=(--algorithm reptile --outer-lr 0.5 --head-init proto) ;;
    mtl) args=(--algorithm mtl --init "$OUT/pretrain" --inner-lr 0.1) ;;
    *) args=(--algorithm "$alg") ;;
  esac
  start=$(date +%s)
  $MTL meta-train "${COMMON[@]}" "${args[@]}" --out "$OUT/$alg"
  echo "$alg trained in $(( $(date +%s) - start )) s" >&2
done
echo "| method | 5-way 1-shot (${EPISODES_5:-600} episodes) | 20-way 1-shot (${EPISODES_20:-600} episodes) |"
echo "| --- | --- | --- |"
for run in pretrain maml fomaml reptile metasgd anil protonet mtl joint; do
  row="| $run |"
  for ways in 5 20; do
    if [ "$ways" = 5 ]; then episodes=${EPISODES_5:-600}; else episodes=${EPISODES_20:-600}; fi
    json=$($MTL evaluate "$OUT/$run" --ways "$ways" --shots 1 --queries 15 --episodes "$episodes" --json)
    row="$row $(echo "$json" | python3 -c 'import json, sys; r = json.load(sys.stdin); print("%.2f ± %.2f (%s)" % (100 * r["accuracy"], 100 * r["ci95"], r["method"]))') |"
  done
  echo "$row"
done
