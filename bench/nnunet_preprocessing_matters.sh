#!/usr/bin/env bash
# Does nnU-Net's preprocessing matter? Train the segmenter twice on the same phantoms, once with the
# bundle's MONAI preprocessing and once with configs/nnunet_preprocessing*.json, and score both on
# unseen phantoms with `cascade evaluate`. See docs/nnunet.md for the numbers.
#
# Phantoms on an MBAS-like grid (2.5 x 0.625 x 0.625 mm, reduced field of view 60 x 200 x 200 mm),
# the demo recipe's network at 1.25 x 1.25 x 2.5 mm, so both preprocessings resample in plane by 2.
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

run_mode() {  # $1: monai | nnunet
  local mode=$1 train_cfg="'configs/train.json','configs/demo.json'" infer_cfg="'configs/inference.json','configs/demo.json'"
  if [ "$mode" = nnunet ]; then
    train_cfg="$train_cfg,'configs/nnunet_preprocessing_train.json'"
    infer_cfg="$infer_cfg,'configs/nnunet_preprocessing.json'"
  fi
  local root="$WORK/segmenter_$mode"
  cd "$REPO/bundles/atria_segmenter"
  if [ ! -f "$root/models/model.pt" ]; then
    /usr/bin/time -f "$mode training: %e s wall" env OMP_NUM_THREADS=1 nice -n 10 "$PY" -m monai.bundle run training \
      --meta_file configs/metadata.json --config_file "[$train_cfg]" --bundle_root "$root" \
      --dataset_dir "$WORK/train" --num_folds 4 --fold 0 --mask_from_label true \
      --num_epochs "$EPOCHS" --iterations_per_epoch "$ITERATIONS" --val_interval 4 > "$WORK/train_$mode.log" 2>&1
  fi
  OMP_NUM_THREADS=1 nice -n 10 "$PY" -m monai.bundle run --config_file "[$infer_cfg]" --bundle_root "$root" \
    --dataset_dir "$WORK/unseen" --mask_from_label true --output_dir "$WORK/pred_$mode" > "$WORK/predict_$mode.log" 2>&1
  "$CASCADE" evaluate "$WORK/pred_$mode" "$WORK/unseen" "$WORK/eval_$mode" > "$WORK/evaluate_$mode.log" 2>&1
}

run_mode monai &
run_mode nnunet &
wait
for mode in monai nnunet; do echo "== $mode"; cat "$WORK/eval_$mode/summary.json"; done
