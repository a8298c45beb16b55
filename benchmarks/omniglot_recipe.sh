#!/usr/bin/env bash
# The README's recommended Omniglot recipe, as written there, on this CPU — two pretrainings of the same network:
#   1. the teacher: mtl pretrain (Conv-4 widening to 256 filters at the top, rotations as classes, stronger affine
#      jitter and an elastic distortion, 30 epochs), left uncalibrated;
#   2. the student: the same command again, distilled from the teacher (--teacher: born-again networks,
#      Furlanello et al. 2018; (1 − 0.5)·CE + 0.5·T²·KL at T = 4), ending by calibrating the device settings —
#      head steps, step size, temperature — on the validation characters;
#   → mtl export → OUT_DIR/bundle.mtlb. No meta-training stage: measured on this split, episodic fine-tuning
#   (Meta-Baseline) of this extractor lowered the held-out accuracy (README, "Recommended recipe").
# A stage whose directory holds a checkpoint is resumed (--resume; a finished one has no epochs left), so running
#   the script again after an interruption continues it; OUT_DIR/timing.json then names the stages it resumed.
# Measured recipe (default): test = one held-out alphabet (Japanese katakana); the other background alphabets'
#   characters split into train/val; the bundle is then evaluated through the device runtime, 600 seeded
#   episodes per cell (5-way 1-shot, 20-way 1-shot, 20-way 5-shot, 5-way 5-shot), into OUT_DIR/eval/*.json and
#   *.png (accuracy over the bundle's adaptation steps with each step's paired gain over step 0, and the
#   reliability diagram; the same to 20 steps in OUT_DIR/eval/*-steps.*).
# --deploy: the same settings trained on every background alphabet (validation: 10 % of the characters),
#   nothing held out — the model a user ships; there is no test alphabet to evaluate on.
# OUT_DIR/timing.json: the wall-clock seconds of training (both pretrainings, the student's calibration included).
# Usage: bash benchmarks/omniglot_recipe.sh OUT_DIR [--deploy]
set -euo pipefail
OUT=${1:?usage: bash benchmarks/omniglot_recipe.sh OUT_DIR [--deploy]}
MODE=${2:-}
DATA=${DATA:-omniglot:../shared/data/omniglot}
BIN=${BIN:-.venv/bin}
EPOCHS=${EPOCHS:-30}
case "$MODE" in
  "") SPLIT=(--split 0.7,0.1,0.2 --split-by superclass-test) ;;
  --deploy) SPLIT=(--split 0.9,0.1,0 --split-by class) ;;
  *) echo "error: unknown option $MODE (expected --deploy)" >&2; exit 2 ;;
esac
RECIPE=(--data "$DATA" --backbone conv4 --backbone-option 'width=[64,64,128,256]' --epochs "$EPOCHS" --rotations
        --augment-rotate 15 --augment-scale 0.15 --augment-shear 0.3 --augment-elastic 0.06 "${SPLIT[@]}")
mkdir -p "$OUT"
now() { date +%s.%N; }
RESUMED=()
# stage DIR ARGS…: mtl pretrain into DIR, resuming what DIR already holds
stage() {
  local dir=$1; shift
  if [ -f "$dir/last.safetensors" ]; then
    RESUMED+=("$(basename "$dir")")
    $BIN/mtl pretrain "${RECIPE[@]}" "$@" --out "$dir" --resume -q
  else
    $BIN/mtl pretrain "${RECIPE[@]}" "$@" --out "$dir" -q
  fi
}
t0=$(now)
stage "$OUT/teacher" --calibrate-episodes 0
t1=$(now)
stage "$OUT/student" --teacher "$OUT/teacher"
t2=$(now)
$BIN/mtl export "$OUT/student" --out "$OUT/bundle.mtlb" --single-file
$BIN/python - "$OUT" "$t0" "$t1" "$t2" "$DATA" "${SPLIT[1]}" "${SPLIT[3]}" "${RESUMED[*]:-}" <<'PY'
import json, sys
out, t0, t1, t2, data, split, split_by, resumed = sys.argv[1:]
t0, t1, t2 = map(float, (t0, t1, t2))
timing = {"training_seconds": round(t2 - t0, 1), "teacher_seconds": round(t1 - t0, 1),
          "student_seconds": round(t2 - t1, 1), "resumed": resumed.split(), "data": data, "split": split,
          "split_by": split_by}
open(f"{out}/timing.json", "w").write(json.dumps(timing, indent=2) + "\n")
print(json.dumps(timing))
PY
[ "$MODE" = --deploy ] && exit 0
mkdir -p "$OUT/eval"
for cell in "5 1" "20 1" "20 5" "5 5"; do
  set -- $cell
  name="$OUT/eval/${1}w${2}s"
  $BIN/mtl evaluate "$OUT/bundle.mtlb" --ways "$1" --shots "$2" --episodes 600 --json --plot "$name.png" > "$name.json"
  $BIN/mtl evaluate "$OUT/bundle.mtlb" --ways "$1" --shots "$2" --episodes 600 --json --steps 20 \
      --plot "$name-steps.png" > "$name-steps.json"
  $BIN/python - "$name" "$1" "$2" <<'PY'
import json, sys
name, ways, shots = sys.argv[1:]
d, s = json.load(open(f"{name}.json")), json.load(open(f"{name}-steps.json"))
gain = lambda c: f"{100 * c[0]['accuracy']:.2f} → {100 * c[-1]['accuracy']:.2f} % ({100 * c[-1]['gain']:+.2f} ± {100 * c[-1]['gain_ci95']:.2f} pp paired)"
print(f"{ways}-way {shots}-shot: {100 * d['accuracy']:.2f} % ± {100 * d['ci95']:.2f} at {d['steps']} steps "
      f"(ECE {d['ece']:.3f}); steps 0 → {d['steps']}: " + (gain(d["curve"]) if "curve" in d else "none taken")
      + f"; 0 → 20: {gain(s['curve'])}")
PY
done
