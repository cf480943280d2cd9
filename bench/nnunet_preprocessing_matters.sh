#!/usr/bin/env bash
# Does nnU-Net's preprocessing matter? Train the segmenter twice on the same phantoms, once with the
# bundle's MONAI preprocessing and once with configs/nnunet_preprocessing*.json, and score both on
# unseen phantoms with `cascade evaluate`. See docs/nnunet.md for the numbers.
#
# Phantoms on an MBAS-like grid (2.5 x 0.625 x 0.625 mm, reduced field of view 60 x 200 x 200 mm),
# the demo recipe's network at 1.25 x 1.25 x 2.5 mm, so both preprocessings resample in plane by 2.
# Inference uses the bundle's MONAI SlidingWindowInferer in both cases (only the preprocessing
# differs); the two models are also run with the other preprocessing.
# Usage: bash bench/nnunet_preprocessing_matters.sh [WORK] [EPOCHS] [ITERATIONS_PER_EPOCH]
set -euo pipefail
WORK=$(realpath -m "${1:-nnunet_matters}")
EPOCHS=${2:-8}
ITERATIONS=${3:-50}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
CASCADE=${CASCADE:-$REPO/.venv/bin/cascade}
GRID=(--shape 24 320 320 --spacing 2.5 0.625 0.625)

[ -d "$WORK/train" ] || "$CASCADE" phantom "$WORK/train" --cases 16 --seed 0 "${GRID[@]}"
[ -d "$WORK/unseen" ] || "$CASCADE" phantom "$WORK/unseen" --cases 6 --seed 2000 "${GRID[@]}"

train_mode() {  # $1: monai | nnunet
  local mode=$1 configs="'configs/train.json','configs/demo.json'"
  [ "$mode" = nnunet ] && configs="$configs,'configs/nnunet_preprocessing_train.json'"
  [ -f "$WORK/segmenter_$mode/models/model.pt" ] && return
  cd "$REPO/bundles/atria_segmenter"
  /usr/bin/time -f "$mode training: %e s wall" env OMP_NUM_THREADS=1 nice -n 10 "$PY" -m monai.bundle run training \
    --meta_file configs/metadata.json --config_file "[$configs]" --bundle_root "$WORK/segmenter_$mode" \
    --dataset_dir "$WORK/train" --num_folds 4 --fold 0 --mask_from_label true \
    --num_epochs "$EPOCHS" --iterations_per_epoch "$ITERATIONS" --val_interval 4 > "$WORK/train_$mode.log" 2>&1
}

predict_mode() {  # $1: preprocessing the model was trained with, $2: preprocessing at inference
  local name=$1 configs="'configs/inference.json','configs/demo.json'"
  [ "$2" = nnunet ] && configs="$configs,'configs/nnunet_preprocessing.json'"
  [ "$1" = "$2" ] || name="${1}_infer_$2"
  [ -f "$WORK/eval_$name/summary.json" ] && return
  cd "$REPO/bundles/atria_segmenter"
  OMP_NUM_THREADS=1 nice -n 10 "$PY" -m monai.bundle run --config_file "[$configs]" --bundle_root "$WORK/segmenter_$1" \
    --dataset_dir "$WORK/unseen" --mask_from_label true --output_dir "$WORK/pred_$name" > "$WORK/predict_$name.log" 2>&1
  "$CASCADE" evaluate "$WORK/pred_$name" "$WORK/unseen" "$WORK/eval_$name" > "$WORK/evaluate_$name.log" 2>&1
}

train_mode monai &
train_mode nnunet &
wait
for trained in monai nnunet; do
  for inferred in monai nnunet; do predict_mode "$trained" "$inferred" & done
  wait
done
for log in "$WORK"/evaluate_*.log; do echo "== $(basename "$log" .log)"; grep -E "^ +Wall|^ +Dice|^mean |^std " "$log"; done
